"""Replica, PoolWorker and ReplicaSet: the live set of places a model is served, and their state.

A replica is one place a model is served: a native worker process (started by the cluster backend), a
model loaded on a pool's shared worker, or an external OpenAI-compatible URL. Only READY replicas are
routed to. One writer per process owns every field here: the controller (from its probes), or, on a
gateway without a controller, the link that mirrors the controller's records (gateway/link.py). The
gateway reads the set and keeps its own load book beside it (gateway/load_book.py).
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from infercloud.contracts import ModelState, PoolWorkerRecord, ReplicaRecord, WorkerState

REPORTED_HASHES = 8192   # cached-prefix block hashes remembered per replica from its worker's reports


class ReplicaState(str, Enum):
    STARTING = "starting"     # process launched (or model loading), not yet answering
    READY = "ready"           # routable
    UNHEALTHY = "unhealthy"   # failed probes; out of routing until a probe passes
    DRAINING = "draining"     # finishing in-flight requests, taking no new ones
    DEAD = "dead"             # gone; a native replica is replaced


class KnownHashes:
    """An LRU set of block hashes (bounded), for `in` checks by the prefix_aware policy."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._hashes: OrderedDict[bytes, None] = OrderedDict()

    def add(self, hashes: Iterable[bytes]) -> None:
        for h in hashes:
            self._hashes[h] = None
            self._hashes.move_to_end(h)
        while len(self._hashes) > self.capacity:
            self._hashes.popitem(last=False)

    def __contains__(self, h: object) -> bool:
        return h in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)


@dataclass(eq=False)
class PoolWorker:
    """A shared worker of a pool: one process hosting many models, which the controller loads and unloads."""

    worker_id: str
    pool: str
    url: str
    handle: object
    state: ReplicaState = ReplicaState.STARTING
    failed_probes: int = 0
    started_at: float = 0.0
    last_state: WorkerState | None = None     # its last /internal/state
    region: str | None = None                 # the region of the node it runs on

    @property
    def is_ready(self) -> bool:
        return self.state == ReplicaState.READY

    def record(self) -> PoolWorkerRecord:
        state = self.last_state
        return PoolWorkerRecord(
            worker_id=self.worker_id, pool=self.pool, url=self.url, state=self.state.value,
            pid=getattr(self.handle, "pid", None), models=tuple(sorted(state.models)) if state else (),
            region=self.region, node_id=getattr(self.handle, "node_id", None),
            memory_used_bytes=state.memory_used_bytes if state else None,
            memory_budget_bytes=state.memory_budget_bytes if state else None,
            num_loads=state.num_loads if state else None, num_evictions=state.num_evictions if state else None)


@dataclass(eq=False)
class Replica:
    replica_id: str
    model: str
    url: str
    is_external: bool = False
    handle: object | None = None          # the backend's WorkerHandle for a dedicated worker
    state: ReplicaState = ReplicaState.STARTING
    failed_probes: int = 0                # failed probes in a row
    probes_passed: int = 0                # passing probes so far (a gateway's failure holds until the next)
    started_at: float = 0.0
    engine: ModelState | None = None      # the model's entry of its worker's last /internal/state
    region: str | None = None             # the region of the node it runs on (routing prefers the request's)
    worker: PoolWorker | None = None      # the shared worker it is loaded on (pooled models)
    wanted_region: str | None = None      # the model's region slot it fills (it may run elsewhere: no node left)
    reported_hashes: KnownHashes = field(default_factory=lambda: KnownHashes(REPORTED_HASHES))

    @property
    def is_ready(self) -> bool:
        """Routable: only ready replicas take requests."""
        return self.state == ReplicaState.READY

    def observe(self, engine: ModelState | None) -> None:
        """Its worker's report of the model: the engine's load, and the prefix blocks it has cached."""
        self.engine = engine
        if engine is not None:
            self.reported_hashes.add(bytes.fromhex(h) for h in engine.recent_prefix_block_hashes)

    def record(self) -> ReplicaRecord:
        return ReplicaRecord(
            replica_id=self.replica_id, model=self.model, url=self.url, external=self.is_external,
            state=self.state.value, region=self.region, wanted_region=self.wanted_region,
            probes_passed=self.probes_passed, pid=getattr(self.handle, "pid", None),
            node_id=getattr(self.handle, "node_id", None), failed_probes=self.failed_probes,
            worker=self.worker.worker_id if self.worker is not None else None, engine=self.engine)

    @classmethod
    def mirror(cls, record: ReplicaRecord) -> "Replica":
        replica = cls(record.replica_id, record.model, record.url, is_external=record.external)
        replica.update(record)
        return replica

    def update(self, record: ReplicaRecord) -> None:
        """Take the controller's record of this replica (a gateway that mirrors another's set)."""
        self.url, self.region, self.wanted_region = record.url, record.region, record.wanted_region
        self.state, self.probes_passed = ReplicaState(record.state), record.probes_passed
        self.failed_probes = record.failed_probes
        self.observe(record.engine)


class ReplicaSet:
    """Every replica of every model, by model; ids are `<model>-<n>` with n counting up, never reused."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_model: dict[str, list[Replica]] = {}
        self._counter = itertools.count()
        self.clock = clock
        self._added_at: dict[str, float] = {}          # replica id -> when it joined the set
        self._past_seconds: dict[str, float] = {}      # model -> replica-seconds of replicas since removed

    def new_id(self, model: str) -> str:
        return f"{model}-{next(self._counter)}"

    def add(self, replica: Replica) -> None:
        self._by_model.setdefault(replica.model, []).append(replica)
        self._added_at[replica.replica_id] = self.clock()

    def remove(self, replica: Replica) -> None:
        """Out of the set (a no-op for one already gone)."""
        replicas = self._by_model.get(replica.model, [])
        if replica not in replicas:
            return
        replicas.remove(replica)
        added = self._added_at.pop(replica.replica_id, None)
        if added is not None:
            self._past_seconds[replica.model] = self._past_seconds.get(replica.model, 0.0) + self.clock() - added

    def replica_seconds(self) -> dict[str, float]:
        """Per model, the seconds its replicas have been in the set (alive or starting) since it was made."""
        now = self.clock()
        seconds = dict(self._past_seconds)
        for model, replicas in self._by_model.items():
            seconds[model] = seconds.get(model, 0.0) + sum(now - self._added_at[r.replica_id] for r in replicas
                                                            if r.replica_id in self._added_at)
        return seconds

    def of(self, model: str) -> list[Replica]:
        return list(self._by_model.get(model, []))

    def routable(self, model: str) -> list[Replica]:
        return [r for r in self._by_model.get(model, []) if r.is_ready]

    def all(self) -> list[Replica]:
        return [r for replicas in self._by_model.values() for r in replicas]

    def on(self, worker: PoolWorker) -> list[Replica]:
        """The replicas loaded on a pool worker."""
        return [r for r in self.all() if r.worker is worker]

    def mirror(self, records: Iterable[ReplicaRecord]) -> None:
        """Make this set the controller's: records not here are added, those here updated, the rest removed."""
        mine = {r.replica_id: r for r in self.all()}
        for record in records:
            replica = mine.pop(record.replica_id, None)
            if replica is None:
                self.add(Replica.mirror(record))
            else:
                replica.update(record)
        for gone in mine.values():
            self.remove(gone)
