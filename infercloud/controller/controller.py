"""Controller: starts each model's replicas, probes them, and replaces the ones that die or stop answering.

The loop, every `probe_interval_s`:
  1. probe every replica: a native one whose process has exited is DEAD at once; otherwise GET /health
     (200 = alive) and, for native workers, GET /internal/state (draining flag, the engine's recent
     cached-prefix hashes, load). A pass makes a STARTING or UNHEALTHY replica READY again.
  2. a replica failing `unhealthy_after` probes in a row (or not up within the startup timeout) leaves
     routing; a native one is killed and replaced, an external one waits for its next passing probe.
  3. keep each model's target of native workers: DEAD ones are replaced. The target is `replicas`, or,
     for a model with `autoscaling`, what the autoscaler's decide() says from this tick's observation
     (engine load from the probes, requests held and stream latencies from the gateway); replicas
     beyond the target (the newest first) are drained in the background.
Removing a replica (scale down, shutdown) goes through drain: it leaves routing, then gets SIGTERM and
finishes what it has in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable

import aiohttp

from infercloud.cluster.base import ClusterBackend, WorkerSpec
from infercloud.config import ModelSpec, ServerConfig
from infercloud.controller.autoscaler import Observation, ScalingContext, ScalingDecision, decide
from infercloud.controller.replicas import Replica, ReplicaSet, ReplicaState

log = logging.getLogger("infercloud.controller")


class Controller:
    def __init__(self, config: ServerConfig, backend: ClusterBackend, replicas: ReplicaSet,
                 client: aiohttp.ClientSession, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.spec = config.controller
        self.backend = backend
        self.replicas = replicas
        self.client = client
        self.clock = clock
        self.num_restarts = 0
        self.targets = {m.name: m.replicas for m in config.models}
        self.decisions: dict[str, ScalingDecision] = {}
        self._observations: dict[str, deque[Observation]] = {m.name: deque(maxlen=720) for m in config.models}
        self._draining: set[asyncio.Task] = set()
        self._stopping = False
        self._task: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        for model in self.config.models:
            for url in model.external:
                self.replicas.add(Replica(self.replicas.new_id(model.name), model.name, url, is_external=True,
                                          started_at=self.clock()))
            for _ in range(model.replicas):
                await self.start_replica(model)
        self._task = asyncio.create_task(self._loop(), name="controller")

    async def wait_ready(self, timeout_s: float) -> bool:
        """Until every native replica is READY (True) or the timeout passes (False).

        External replicas are not waited for beyond the first probe: they may be down, and routing
        learns of them when they come up.
        """
        deadline = self.clock() + timeout_s
        await asyncio.gather(*(self.probe(r) for r in self.replicas.all() if r.is_external))
        while self.clock() < deadline:
            if all(sum(not r.is_external for r in self.replicas.routable(m.name)) >= m.replicas
                   for m in self.config.models):
                return True
            await asyncio.sleep(0.1)
        return False

    async def stop(self) -> None:
        """Stop probing and drain every native worker (in parallel)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._draining, *(self.remove_replica(r) for r in self.replicas.all()
                                                if r.state != ReplicaState.DRAINING), return_exceptions=True)

    async def start_replica(self, model: ModelSpec) -> Replica:
        threads = model.threads or self.config.cluster_spec.threads_per_worker
        worker_model = dataclasses.replace(model, engine=dataclasses.replace(model.engine, num_threads=threads))
        worker_config = dataclasses.replace(self.config, models=(worker_model,), cluster=None)
        replica_id = self.replicas.new_id(model.name)
        handle = await asyncio.to_thread(self.backend.start_worker, WorkerSpec(replica_id, worker_config, threads))
        replica = Replica(replica_id, model.name, handle.url, handle=handle, started_at=self.clock())
        replica.known_hashes.capacity = self.config.gateway.recent_routes
        self.replicas.add(replica)
        log.info("started replica %s at %s", replica_id, handle.url)
        return replica

    async def remove_replica(self, replica: Replica, drain: bool = True) -> None:
        """Out of routing now; a native worker drains (or is killed) and is gone when this returns."""
        replica.state = ReplicaState.DRAINING
        if replica.handle is not None:
            timeout = self.config.drain_timeout_s + 5
            await asyncio.to_thread(self.backend.stop_worker, replica.handle, drain, timeout)
        replica.state = ReplicaState.DEAD
        if replica in self.replicas.of(replica.model):
            self.replicas.remove(replica)

    # -- the loop ----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive one bad tick
                log.exception("controller tick failed")
            await asyncio.sleep(self.spec.probe_interval_s)

    async def tick(self) -> None:
        await asyncio.gather(*(self.probe(r) for r in self.replicas.all()
                               if r.state not in (ReplicaState.DEAD,)))
        for model in self.config.models:
            await self._reconcile(model)

    def _autoscale(self, model: ModelSpec) -> None:
        """Observe the model once and set its target from the autoscaler's decision."""
        native = [r for r in self.replicas.of(model.name) if not r.is_external and r.state != ReplicaState.DRAINING]
        states = [r.last_state or {} for r in native if r.is_routable]
        traffic = self.replicas.traffic(model.name)
        now = self.clock()
        self._observations[model.name].append(Observation(
            now, len(native), sum(s.get("running", 0) for s in states),
            sum(s.get("waiting", 0) for s in states) + traffic.held, traffic.p90("ttft"), traffic.p90("tpot")))
        decision = decide(ScalingContext(model.name, model.autoscaling, now, self.targets[model.name],
                                         list(self._observations[model.name]), traffic.last_arrival))
        if decision.target_replicas != self.targets[model.name]:
            log.info("autoscaler: %s %d -> %d replicas (%s)", model.name, self.targets[model.name],
                     decision.target_replicas, decision.reason)
        self.targets[model.name] = decision.target_replicas
        self.decisions[model.name] = decision

    async def _reconcile(self, model: ModelSpec) -> None:
        if model.autoscaling is not None and not self._stopping:
            self._autoscale(model)
        for replica in self.replicas.of(model.name):
            if replica.is_external:
                continue
            if replica.state == ReplicaState.DEAD:
                self.replicas.remove(replica)
                log.warning("replica %s is gone", replica.replica_id)
            elif self._needs_restart(replica):
                log.warning("replica %s failed %d probes: restarting it", replica.replica_id, replica.failed_probes)
                await self.remove_replica(replica, drain=False)
        if self._stopping:
            return
        native = [r for r in self.replicas.of(model.name) if not r.is_external and r.state != ReplicaState.DRAINING]
        target = self.targets[model.name]
        for replica in sorted(native, key=lambda r: r.started_at)[target:]:  # scale in: newest first, drained
            replica.state = ReplicaState.DRAINING
            task = asyncio.create_task(self.remove_replica(replica))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        if not self.spec.restart and model.autoscaling is None:
            return
        for _ in range(target - len(native)):
            self.num_restarts += 1
            await self.start_replica(model)

    def _needs_restart(self, replica: Replica) -> bool:
        if not self.spec.restart:
            return False
        if replica.state == ReplicaState.STARTING:
            return self.clock() - replica.started_at > self.config.cluster_spec.startup_timeout_s
        return replica.state == ReplicaState.UNHEALTHY and replica.failed_probes >= self.spec.unhealthy_after

    async def probe(self, replica: Replica) -> None:
        handle = replica.handle
        if handle is not None and not handle.is_alive():
            if replica.state != ReplicaState.DEAD:
                log.warning("replica %s: process exited", replica.replica_id)
            replica.state = ReplicaState.DEAD
            return
        ok, state = await self._read(replica)
        if replica.state == ReplicaState.DRAINING:
            return
        if not ok:
            replica.failed_probes += 1
            if replica.state == ReplicaState.READY and replica.failed_probes >= self.spec.unhealthy_after:
                replica.state = ReplicaState.UNHEALTHY
            return
        replica.failed_probes = 0
        if state is not None:
            self._absorb(replica, state)
        if state is not None and state.get("draining"):
            replica.state = ReplicaState.DRAINING
        elif replica.state in (ReplicaState.STARTING, ReplicaState.UNHEALTHY):
            if replica.state == ReplicaState.STARTING:
                log.info("replica %s is ready", replica.replica_id)
            replica.state = ReplicaState.READY

    async def _read(self, replica: Replica) -> tuple[bool, dict | None]:
        try:
            if replica.is_external:
                return (await self._get(f"{replica.url}/health"))[0] == 200, None
            (health, _), (status, state) = await asyncio.gather(self._get(f"{replica.url}/health"),
                                                                self._get(f"{replica.url}/internal/state"))
            return health == 200 and status == 200, state
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return False, None

    async def _get(self, url: str) -> tuple[int, dict | None]:
        timeout = aiohttp.ClientTimeout(total=self.spec.probe_timeout_s)
        async with self.client.get(url, timeout=timeout) as response:
            body = await response.json(content_type=None) if response.status == 200 else None
            return response.status, body

    def _absorb(self, replica: Replica, state: dict) -> None:
        model_state = (state.get("models") or {}).get(replica.model)
        replica.last_state = model_state
        if model_state:
            replica.known_hashes.add(bytes.fromhex(h) for h in model_state.get("recent_prefix_block_hashes", ()))
