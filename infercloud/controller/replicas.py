"""Replica and ReplicaSet: the live routing set the controller maintains and the gateway reads.

A replica is one place a model is served: a native worker process (started by the cluster backend) or
an external OpenAI-compatible URL. Only `ready` replicas are routed to. The gateway keeps the load
counters (requests and tokens it has in flight there) and the prompt hashes it recently sent there;
the controller sets the state from probes and merges the worker's own cached-prefix hashes.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from infercloud.router.base import ReplicaView


class ReplicaState(str, Enum):
    STARTING = "starting"     # process launched, /health not yet 200
    READY = "ready"           # routable
    UNHEALTHY = "unhealthy"   # failed probes or a failed request; out of routing until a probe passes
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
    last_state: dict | None = None        # its whole /internal/state
    region: str | None = None             # the region of the node it runs on

    def describe(self) -> dict:
        state = self.last_state or {}
        return {"worker_id": self.worker_id, "pool": self.pool, "url": self.url, "state": self.state.value,
                "pid": getattr(self.handle, "pid", None), "models": sorted(state.get("models") or {}),
                "region": self.region, "node_id": getattr(self.handle, "node_id", None),
                "memory_used_bytes": state.get("memory_used_bytes"),
                "memory_budget_bytes": state.get("memory_budget_bytes"),
                "num_loads": state.get("num_loads"), "num_evictions": state.get("num_evictions")}


@dataclass(eq=False)
class Replica:
    replica_id: str
    model: str
    url: str
    is_external: bool = False
    handle: object | None = None          # the backend's WorkerHandle for native replicas
    state: ReplicaState = ReplicaState.STARTING
    failed_probes: int = 0
    started_at: float = 0.0
    outstanding_requests: int = 0
    outstanding_tokens: int = 0
    num_routed: int = 0                   # requests the gateway has sent here
    known_hashes: KnownHashes = field(default_factory=lambda: KnownHashes(8192))
    last_state: dict | None = None        # the model's entry of the worker's /internal/state
    region: str | None = None             # the region of the node it runs on (routing prefers the request's)
    worker: PoolWorker | None = None      # the shared worker it is loaded on (pooled models)
    wanted_region: str | None = None      # the model's region slot it fills (it may run elsewhere: no node left)
    failed_at: float | None = None        # when a request last could not reach it (this gateway's clock)

    @property
    def is_routable(self) -> bool:
        return self.state == ReplicaState.READY

    def view(self) -> ReplicaView:
        return ReplicaView(self.replica_id, self.model, self.outstanding_requests, self.outstanding_tokens,
                           self.known_hashes, self.region)

    def describe(self) -> dict:
        return {"replica_id": self.replica_id, "model": self.model, "url": self.url, "external": self.is_external,
                "pid": getattr(self.handle, "pid", None), "state": self.state.value,
                "failed_probes": self.failed_probes, "num_routed": self.num_routed,
                "outstanding_requests": self.outstanding_requests, "outstanding_tokens": self.outstanding_tokens,
                "known_prefix_blocks": len(self.known_hashes), "engine": self.last_state,
                "worker": self.worker.worker_id if self.worker is not None else None, "region": self.region,
                "wanted_region": self.wanted_region, "node_id": getattr(self.handle, "node_id", None)}


class Traffic:
    """What the gateway sees of one model's requests, for the autoscaler: arrivals, requests held while
    the model has no ready replica, and the TTFT and TPOT of recent streams.

    Gateways without a controller of their own report theirs (`since`) to the controller's, which
    adds them in (`absorb`): arrivals and latencies as if seen here, requests held per gateway (a
    gateway silent for `REMOTE_HELD_TTL_S` holds none)."""

    REMOTE_HELD_TTL_S = 10.0

    def __init__(self, clock: Callable[[], float], window_s: float = 30.0):
        self.clock = clock
        self.window_s = window_s
        self.held = 0                     # requests this gateway holds
        self._remote_held: dict[str, tuple[int, float]] = {}   # other gateway -> (held, reported at)
        self.last_arrival: float | None = None
        self._arrivals: deque[float] = deque(maxlen=65536)
        self._ttft: deque[tuple[float, float]] = deque(maxlen=4096)
        self._tpot: deque[tuple[float, float]] = deque(maxlen=4096)

    def arrived(self) -> None:
        self.last_arrival = self.clock()
        self._arrivals.append(self.last_arrival)

    def arrival_rate(self) -> float:
        """Requests per second over the last `window_s`."""
        since = self.clock() - self.window_s
        while self._arrivals and self._arrivals[0] < since:
            self._arrivals.popleft()
        return len(self._arrivals) / self.window_s

    def stream_done(self, ttft_s: float | None, tpot_s: float | None) -> None:
        now = self.clock()
        if ttft_s is not None:
            self._ttft.append((now, ttft_s))
        if tpot_s is not None:
            self._tpot.append((now, tpot_s))

    @property
    def held_everywhere(self) -> int:
        """Requests held here and at every gateway that reported lately."""
        since = self.clock() - self.REMOTE_HELD_TTL_S
        return self.held + sum(n for n, at in self._remote_held.values() if at >= since)

    def since(self, t: float) -> dict:
        """What happened after `t` (this clock), to report to the controller's gateway."""
        return {"arrivals": sum(1 for a in self._arrivals if a > t), "held": self.held,
                "ttft": [v for at, v in self._ttft if at > t], "tpot": [v for at, v in self._tpot if at > t]}

    def absorb(self, gateway_id: str, report: dict) -> None:
        """Another gateway's report (`since`): its arrivals and latencies count as seen now."""
        now = self.clock()
        for _ in range(min(int(report.get("arrivals", 0)), self._arrivals.maxlen)):
            self._arrivals.append(now)
        if report.get("arrivals"):
            self.last_arrival = now
        self._ttft.extend((now, float(v)) for v in report.get("ttft", ()))
        self._tpot.extend((now, float(v)) for v in report.get("tpot", ()))
        self._remote_held[gateway_id] = (int(report.get("held", 0)), now)

    def p90(self, which: str) -> float | None:
        """p90 TTFT ("ttft") or TPOT ("tpot") of the streams of the last `window_s`; None without any."""
        since = self.clock() - self.window_s
        values = sorted(v for t, v in (self._ttft if which == "ttft" else self._tpot) if t >= since)
        return values[min(len(values) - 1, int(0.9 * len(values)))] if values else None


class ReplicaSet:
    """Every replica of every model, by model; ids are `<model>-<n>` with n counting up, never reused."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_model: dict[str, list[Replica]] = {}
        self._counter = itertools.count()
        self.clock = clock
        self._added_at: dict[str, float] = {}          # replica id -> when it joined the set
        self._past_seconds: dict[str, float] = {}      # model -> replica-seconds of replicas since removed
        self._traffic: dict[str, Traffic] = {}
        self.on_want: Callable[[str], None] | None = None   # the controller: a request waits for this model

    def want(self, model: str) -> None:
        """A request is held for `model`, which has no ready replica: tell the controller at once."""
        if self.on_want is not None:
            self.on_want(model)

    def traffic(self, model: str) -> Traffic:
        if model not in self._traffic:
            self._traffic[model] = Traffic(self.clock)
        return self._traffic[model]

    def new_id(self, model: str) -> str:
        return f"{model}-{next(self._counter)}"

    def add(self, replica: Replica) -> None:
        self._by_model.setdefault(replica.model, []).append(replica)
        self._added_at[replica.replica_id] = self.clock()

    def remove(self, replica: Replica) -> None:
        self._by_model.get(replica.model, []).remove(replica)
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
        return [r for r in self._by_model.get(model, []) if r.is_routable]

    def all(self) -> list[Replica]:
        return [r for replicas in self._by_model.values() for r in replicas]

    def mark_failed(self, replica: Replica) -> None:
        """A request could not reach it: out of routing at once; the next good probe brings it back."""
        replica.failed_at = self.clock()
        if replica.state == ReplicaState.READY:
            replica.state = ReplicaState.UNHEALTHY
