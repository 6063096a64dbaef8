"""PoolManager: the shared workers of each pool, and the pooled models' replicas loaded on them.

A pooled model (one with `pool`) has no process of its own: a replica is the model loaded on one of the
pool's shared workers (placement.place picks which, by memory, spreading a model's replicas; the memory a
model takes comes from the workers' own reports). Starting one is POST /internal/load there; removing one
is POST /internal/unload, which drains the model only. Pool workers are probed like replicas and replaced
when they die or stop answering (their models are placed again). A worker may unload an idle model to
make room for another: that replica leaves the set and the controller is told (`on_lost`), so an
autoscaled model's target drops with it. A pool with a region keeps its workers there, with stand-ins in
the nearest region while it has no live node (placement.fill_slot).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from infercloud.cluster.base import ClusterBackend, NodeView, WorkerSpec
from infercloud.config import ModelSpec, PoolSpec, ServerConfig, WorkerConfig
from infercloud.contracts import LoadReply, LoadRequest, UnloadRequest, WorkerState
from infercloud.controller.background import Background
from infercloud.controller.placement import WorkerView, device_for, fill_slot, place, region_for
from infercloud.controller.prober import Prober
from infercloud.fleet.replicas import PoolWorker, Replica, ReplicaSet, ReplicaState
from infercloud.router.regions import RegionMap

log = logging.getLogger("infercloud.controller")


class PoolManager:
    def __init__(self, config: ServerConfig, backend: ClusterBackend, fleet: ReplicaSet, prober: Prober,
                 background: Background, clock: Callable[[], float], on_lost: Callable[[Replica], None],
                 wake: Callable[[str], None]):
        self.config = config
        self.backend = backend
        self.fleet = fleet
        self.prober = prober
        self.background = background
        self.clock = clock
        self.on_lost = on_lost            # a replica left without the controller asking
        self.wake = wake                  # reconcile a model now
        self.pools = {p.name: p for p in config.cluster_spec.pools}
        self.workers: list[PoolWorker] = []
        self.region_map = RegionMap.from_specs(config.regions)
        self._ids = itertools.count()

    def worker_config(self, pool: PoolSpec) -> WorkerConfig:
        """A pool worker's own config: the pool's models on its device and threads, none loaded at start, only
        POST /internal/load loads one, within the pool's memory."""
        threads = pool.threads or self.config.cluster_spec.threads_per_worker
        models = tuple(m.for_worker(device=m.engine.device if pool.device == "auto" else pool.device,
                                    num_threads=threads) for m in self.config.models if m.pool == pool.name)
        return self.config.cloud_worker(models, preload=(), memory_budget_gb=pool.memory_gb, multiplex=pool.multiplex,
                                        load_on_request=False)

    async def start_worker(self, pool: PoolSpec, nodes: list[NodeView]) -> PoolWorker:
        threads = pool.threads or self.config.cluster_spec.threads_per_worker
        where = region_for(pool.region, nodes, self.region_map)
        _, gpus = device_for(pool.device, where, nodes)
        worker_id = f"{pool.name}-w{next(self._ids)}"
        handle = await asyncio.to_thread(self.backend.start_worker, WorkerSpec(
            worker_id, self.worker_config(pool), threads, gpus, int(pool.memory_gb * 2**30), where))
        worker = PoolWorker(worker_id, pool.name, handle.url, handle, started_at=self.clock(), region=handle.region)
        self.workers.append(worker)
        log.info("started pool worker %s at %s", worker_id, handle.url)
        return worker

    async def probe(self, worker: PoolWorker) -> None:
        """Probe a worker; its replicas follow what it has loaded (one it unloaded to make room is lost)."""
        state = await self.prober.probe(worker)
        if state is None:
            return
        worker.last_state = state
        for replica in self.fleet.on(worker):
            if replica.model in state.models:
                replica.probes_passed += 1
                replica.observe(state.models[replica.model])
            elif replica.state == ReplicaState.READY:
                self._lost(replica, "unloaded by its worker")

    def _lost(self, replica: Replica, why: str) -> None:
        log.info("replica %s on %s: %s", replica.replica_id, replica.worker.worker_id, why)
        replica.state = ReplicaState.DEAD
        self.fleet.remove(replica)
        self.on_lost(replica)

    async def reconcile(self, nodes: list[NodeView], restart: bool, unhealthy_after: int) -> int:
        """Replace dead or hopeless workers (their models are placed again) and keep each pool at its size,
        at home when its region has a node; returns the workers started."""
        for worker in list(self.workers):
            hopeless = worker.state == ReplicaState.STARTING and \
                self.clock() - worker.started_at > self.config.cluster_spec.startup_timeout_s
            unhealthy = worker.state == ReplicaState.UNHEALTHY and worker.failed_probes >= unhealthy_after
            if worker.state == ReplicaState.DEAD or hopeless or unhealthy:
                await self._replace(worker)
        if not restart:
            return 0
        started = 0
        for pool in self.pools.values():
            mine = [w for w in self.workers if w.pool == pool.name]
            retiring, missing = fill_slot(mine, pool.workers, pool.region, nodes,
                                          self.background.starting[("pool", pool.name)])
            for worker in retiring:
                self._retire(worker)
            for _ in range(missing):
                started += 1
                self.background.start(("pool", pool.name), self.start_worker(pool, nodes),
                                      f"a worker of pool {pool.name}")
        return started

    async def _replace(self, worker: PoolWorker) -> None:
        self.workers.remove(worker)
        worker.state = ReplicaState.DEAD
        for replica in self.fleet.on(worker):
            replica.state = ReplicaState.DEAD
            self.fleet.remove(replica)
        log.warning("pool worker %s is gone", worker.worker_id)
        await asyncio.to_thread(self.backend.stop_worker, worker.handle, False, 5.0)

    def _retire(self, worker: PoolWorker) -> None:
        """Out of the pool: its models drain there (placed again elsewhere at once: their replicas no longer
        count), then it stops."""
        log.info("pool worker %s (region %s) retires: its pool's region has a node again", worker.worker_id,
                 worker.region)
        self.workers.remove(worker)
        replicas = self.fleet.on(worker)
        for replica in replicas:
            replica.state = ReplicaState.DRAINING

        async def retire() -> None:
            await asyncio.gather(*(self.unload(r) for r in replicas), return_exceptions=True)
            await asyncio.to_thread(self.backend.stop_worker, worker.handle, True, self.config.drain_timeout_s + 5)

        self.background.spawn(retire())

    async def unload(self, replica: Replica) -> None:
        if replica.worker.state != ReplicaState.DEAD:
            await self.prober.post(replica.worker.url + "/internal/unload", UnloadRequest(model=replica.model),
                                   self.config.drain_timeout_s + 5)

    async def stop(self) -> None:
        timeout = self.config.drain_timeout_s + 5
        await asyncio.gather(*(asyncio.to_thread(self.backend.stop_worker, w.handle, True, timeout)
                               for w in self.workers), return_exceptions=True)
        for replica in self.fleet.all():
            if replica.worker is not None:
                self.fleet.remove(replica)

    # -- placing a model -----------------------------------------------------------------------------
    def place(self, model: ModelSpec) -> Replica | None:
        """Pick a pool worker for one more replica of `model` and load it there (in the background); None
        when none has room, or no worker has reported what the model takes yet."""
        workers = [w for w in self.workers if w.pool == model.pool]
        need = max((w.last_state.memory_of(model.name) or 0 for w in workers if w.last_state), default=0)
        chosen = place(model.name, need, [self._view(w) for w in workers]) if need else None
        if chosen is None:
            return None
        worker = next(w for w in workers if w.worker_id == chosen.worker_id)
        replica = Replica(self.fleet.new_id(model.name), model.name, worker.url, worker=worker,
                          started_at=self.clock(), region=worker.region)
        self.fleet.add(replica)
        self.background.spawn(self._load(replica, model))
        return replica

    def _view(self, worker: PoolWorker) -> WorkerView:
        state = worker.last_state or WorkerState()
        here = self.fleet.on(worker)
        starting = {r.model for r in here if r.model not in state.models}
        used = state.memory_used_bytes + sum(state.memory_of(m) or 0 for m in starting)
        idle = [m for name, m in state.models.items()
                if not m.pinned and not m.unloading and m.is_idle and name not in starting]
        budget = state.memory_budget_bytes or int(self.pools[worker.pool].memory_gb * 2**30)
        return WorkerView(worker.worker_id, budget, used, frozenset(state.models) | {r.model for r in here},
                          sum(m.memory_bytes or 0 for m in idle), worker.is_ready and worker.last_state is not None,
                          max((m.idle_s or 0.0 for m in idle), default=0.0),
                          min((m.heat or 0.0 for m in idle), default=0.0))

    async def _load(self, replica: Replica, model: ModelSpec) -> None:
        pinned = model.autoscaling is None or model.autoscaling.min_replicas > 0
        start = self.clock()
        status, body = await self.prober.post(replica.worker.url + "/internal/load",
                                              LoadRequest(model=model.name, pinned=pinned),
                                              self.config.cluster_spec.startup_timeout_s)
        if replica.state != ReplicaState.STARTING:
            return
        if status != 200:
            log.warning("loading %s on %s failed (%s): %s", model.name, replica.worker.worker_id, status, body)
            replica.state = ReplicaState.DEAD
            self.fleet.remove(replica)
            await self.probe(replica.worker)     # its memory was not what the last probe said:
            self.wake(model.name)                # place again from what it says now
            return
        reply = LoadReply.model_validate(body)
        replica.state = ReplicaState.READY
        log.info("replica %s: %s loaded on %s in %.2f s", replica.replica_id, model.name, replica.worker.worker_id,
                 self.clock() - start)
        for name in reply.evicted:
            for other in self.fleet.on(replica.worker):
                if other.model == name and other.state == ReplicaState.READY:
                    self._lost(other, f"unloaded to make room for {model.name}")
