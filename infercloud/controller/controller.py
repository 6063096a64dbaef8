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

Pooled models (a model with `pool`) have no process of their own: a replica is the model loaded on one
of the pool's shared workers (placement.py picks which, by memory, spreading a model's replicas). Starting
one is POST /internal/load there; removing one is POST /internal/unload, which drains the model only.
The pool's workers are probed like replicas and replaced when they die (their models are placed again).
A worker may unload an idle model to make room for another: that replica leaves the set, and an
autoscaled model's target drops with it (it comes back when requests for it are held). A request held
at the gateway wakes the controller at once (`wake`), so a model at zero is loaded without waiting
for the next tick.

Regions and nodes: every tick the controller reads the backend's node inventory (on Ray: nodes,
resources, labels). A model with `regions` has a slot per region (placement.region_slots); a
replica of a slot is started on a node of that region, or, when no node of it is alive, of the
nearest region that has one (a lost node's replicas are so placed again elsewhere; its streams were
already resumed by the gateway). A replica's `region` is where it runs: the gateway routes on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable

import aiohttp

from infercloud.cluster.base import ClusterBackend, NodeView, WorkerSpec
from infercloud.config import ModelSpec, PoolSpec, ServerConfig
from infercloud.controller.autoscaler import Observation, ScalingContext, ScalingDecision, decide
from infercloud.controller.placement import WorkerView, place, region_slots
from infercloud.controller.replicas import PoolWorker, Replica, ReplicaSet, ReplicaState
from infercloud.internal_token import bearer
from infercloud.models.footprint import model_memory_bytes
from infercloud.models.pull import resolve_or_pull
from infercloud.router.regions import RegionMap

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
        self.pools = {p.name: p for p in config.cluster_spec.pools}
        self.pool_workers: list[PoolWorker] = []
        self._loads: set[asyncio.Task] = set()     # loads on pool workers and worker starts, in the background
        self._starting: Counter = Counter()        # (model, region) or ("pool", name) -> starts in progress
        self._needs: dict[str, int] = {}          # pooled model -> bytes it takes on a worker
        self._wake = asyncio.Event()
        self._woken: set[str] = set()
        self._worker_ids = itertools.count()
        self.replicas.on_want = self.wake
        self.region_map = RegionMap.from_specs(config.regions)
        self.nodes: list[NodeView] = []
        self.auth = bearer(config.internal_token)   # workers answer only the internal token

    # -- other gateways -------------------------------------------------------------------------------
    def sync(self, report: dict) -> dict:
        """A gateway without a controller (gateway/link.py) reports its traffic and the models it waits
        for; it gets back every replica and what this controller decided."""
        gateway_id = str(report.get("gateway_id") or "?")
        for model, traffic in (report.get("traffic") or {}).items():
            if model in self.targets and isinstance(traffic, dict):
                self.replicas.traffic(model).absorb(gateway_id, traffic)
        for model in report.get("wants") or ():
            if model in self.targets:
                self.wake(model)
        return {"replicas": [r.describe() for r in self.replicas.all()], **self.public_state()}

    def public_state(self) -> dict:
        return {"targets": dict(self.targets), "pool_workers": [w.describe() for w in self.pool_workers],
                "nodes": [dataclasses.asdict(n) for n in self.nodes]}

    # -- nodes and regions ---------------------------------------------------------------------------
    async def read_nodes(self) -> None:
        try:
            self.nodes = await asyncio.to_thread(self.backend.nodes)
        except Exception:  # noqa: BLE001 - keep the last inventory when the cluster cannot be read
            log.exception("reading the node inventory failed")

    def _region_for(self, wanted: str | None) -> str | None:
        """Where a worker meant for region `wanted` starts: there, or the nearest region with a live node."""
        if wanted is None or not self.nodes:
            return wanted
        live = {n.region for n in self.nodes if n.region is not None}
        chosen = wanted if wanted in live else self.region_map.nearest(wanted, live)
        if chosen != wanted:
            log.warning("no live node in region %s: starting its worker in %s", wanted, chosen)
        return chosen

    def _num_gpus(self, device: str, region: str | None) -> tuple[str, int]:
        """The device a worker's models run on and the GPUs it reserves ("auto": cuda if its nodes have one)."""
        if device == "auto" and any(n.num_gpus and (region is None or n.region == region) for n in self.nodes):
            return "cuda", 1
        return device, 1 if device == "cuda" else 0

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.read_nodes()
        for pool in self.pools.values():
            for _ in range(pool.workers):
                await self.start_pool_worker(pool)
        for model in self.config.models:
            for url in model.external:
                self.replicas.add(Replica(self.replicas.new_id(model.name), model.name, url, is_external=True,
                                          started_at=self.clock()))
            if model.pool is None:
                for region in self._slots(model)[1]:
                    await self.start_replica(model, region)
        self._task = asyncio.create_task(self._loop(), name="controller")

    def wake(self, model: str) -> None:
        """Reconcile `model` now (a request waits for it), not at the next tick."""
        self._woken.add(model)
        self._wake.set()

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
        await asyncio.gather(*self._loads, return_exceptions=True)
        await asyncio.gather(*self._draining, *(self.remove_replica(r) for r in self.replicas.all()
                                                if r.state != ReplicaState.DRAINING and r.worker is None),
                             return_exceptions=True)
        timeout = self.config.drain_timeout_s + 5
        await asyncio.gather(*(asyncio.to_thread(self.backend.stop_worker, w.handle, True, timeout)
                               for w in self.pool_workers), return_exceptions=True)
        for replica in self.replicas.all():
            if replica.worker is not None:
                self.replicas.remove(replica)

    async def start_replica(self, model: ModelSpec, region: str | None = None) -> Replica | None:
        """One more replica of `model`, for its slot in `region` (None: anywhere)."""
        if model.pool is not None:
            return self._place(model)
        threads = model.threads or self.config.cluster_spec.threads_per_worker
        where = self._region_for(region)
        device, gpus = self._num_gpus(model.engine.device, where)
        worker_model = dataclasses.replace(model, engine=dataclasses.replace(model.engine, num_threads=threads,
                                                                             device=device))
        worker_config = dataclasses.replace(self.config, models=(worker_model,), cluster=None, internal_only=True)
        replica_id = self.replicas.new_id(model.name)
        handle = await asyncio.to_thread(self.backend.start_worker,
                                         WorkerSpec(replica_id, worker_config, threads, gpus, region=where))
        replica = Replica(replica_id, model.name, handle.url, handle=handle, started_at=self.clock(),
                          region=handle.region, wanted_region=region)
        replica.known_hashes.capacity = self.config.gateway.recent_routes
        self.replicas.add(replica)
        log.info("started replica %s at %s", replica_id, handle.url)
        return replica

    async def remove_replica(self, replica: Replica, drain: bool = True) -> None:
        """Out of routing now; a native worker drains (or is killed) and is gone when this returns."""
        replica.state = ReplicaState.DRAINING
        if replica.worker is not None and replica.worker.state != ReplicaState.DEAD:
            await self._post(replica.worker, "/internal/unload", {"model": replica.model},
                             self.config.drain_timeout_s + 5)
        elif replica.handle is not None:
            timeout = self.config.drain_timeout_s + 5
            await asyncio.to_thread(self.backend.stop_worker, replica.handle, drain, timeout)
        replica.state = ReplicaState.DEAD
        if replica in self.replicas.of(replica.model):
            self.replicas.remove(replica)

    # -- the loop ----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        next_tick = self.clock()
        while not self._stopping:
            try:
                if self.clock() >= next_tick:
                    next_tick = self.clock() + self.spec.probe_interval_s
                    self._woken.clear()
                    await self.tick()
                else:
                    woken, self._woken = self._woken, set()
                    stale = {r.worker for r in self.replicas.all() if r.model in woken and r.worker is not None
                             and r.state == ReplicaState.UNHEALTHY}
                    await asyncio.gather(*(self.probe_worker(w) for w in stale))
                    for model in self.config.models:
                        if model.name in woken:
                            await self._reconcile(model)
            except Exception:  # noqa: BLE001 - the loop must survive one bad tick
                log.exception("controller tick failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_tick - self.clock()))
            except asyncio.TimeoutError:
                pass

    async def tick(self) -> None:
        await self.read_nodes()
        await asyncio.gather(*(self.probe(r) for r in self.replicas.all()
                               if r.state not in (ReplicaState.DEAD,) and r.worker is None),
                             *(self.probe_worker(w) for w in self.pool_workers))
        await self._reconcile_pools()
        for model in self.config.models:
            await self._reconcile(model)

    def _autoscale(self, model: ModelSpec) -> None:
        """Observe the model once and set its target from the autoscaler's decision."""
        native = [r for r in self.replicas.of(model.name) if not r.is_external and r.state != ReplicaState.DRAINING]
        states = [r.last_state or {} for r in native if r.is_routable]
        traffic = self.replicas.traffic(model.name)
        now = self.clock()
        kv = [s["kv_blocks_used"] / s["kv_blocks_total"] for s in states if s.get("kv_blocks_total")]
        self._observations[model.name].append(Observation(
            now, len(native), sum(s.get("running", 0) for s in states),
            sum(s.get("waiting", 0) for s in states) + traffic.held_everywhere, traffic.p90("ttft"),
            traffic.p90("tpot"), max(kv, default=None), traffic.arrival_rate()))
        spec = model.autoscaling   # the model's own SLO targets stand in for ones the autoscaling section leaves out
        spec = dataclasses.replace(spec, ttft_slo_s=spec.ttft_slo_s if spec.ttft_slo_s is not None else model.slo.ttft_s,
                                   tpot_slo_s=spec.tpot_slo_s if spec.tpot_slo_s is not None else model.slo.tpot_s)
        decision = decide(ScalingContext(model.name, spec, now, self.targets[model.name],
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
        surplus, missing = self._slots(model)
        for replica in surplus:
            log.info("draining replica %s (beyond the target of %s)", replica.replica_id, model.name)
            replica.state = ReplicaState.DRAINING
            task = asyncio.create_task(self.remove_replica(replica))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        if not self.spec.restart and model.autoscaling is None:
            return
        for region in missing:
            self.num_restarts += 1
            if model.pool is not None:
                self._place(model)
            else:
                self._in_background((model.name, region), self.start_replica(model, region),
                                    f"a replica of {model.name}" + (f" for region {region}" if region else ""))

    def _in_background(self, key: tuple, start, what: str) -> None:
        """Start a worker without holding up the loop (on Ray, placement may wait for a node); `key`
        counts it as starting meanwhile, so the next tick does not start it twice."""
        self._starting[key] += 1

        async def run() -> None:
            try:
                await start
            except Exception as exc:  # noqa: BLE001 - no node could take it now: the next tick tries again
                log.warning("could not start %s: %s", what, exc)
            finally:
                self._starting[key] -= 1

        task = asyncio.create_task(run())
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    def _slots(self, model: ModelSpec) -> tuple[list[Replica], list[str | None]]:
        """Against the model's target split by region: the replicas to drain and the region slot of each
        replica to start.

        Per slot of `count` in region R: when R has a live node, replicas run there ("home"); the ones
        that had to start elsewhere (stand-ins, while R had no node) keep serving until as many home
        replicas are ready, then drain. Beyond the count, the newest go first.
        """
        native = [r for r in self.replicas.of(model.name) if not r.is_external and r.state != ReplicaState.DRAINING]
        slots = region_slots(model.regions, self.targets[model.name])
        live = {n.region for n in self.nodes}
        surplus = [r for r in native if r.wanted_region not in slots]
        missing: list[str | None] = []
        for region, count in slots.items():
            mine = sorted((r for r in native if r.wanted_region == region), key=lambda r: r.started_at)
            home = [r for r in mine if region is None or r.region == region]
            away = [r for r in mine if r not in home]
            starting = self._starting[(model.name, region)]
            if region is None or region in live or not self.nodes:
                ready = sum(r.state == ReplicaState.READY for r in home)
                surplus += home[count:] + away[max(count - ready, 0):]
                missing += [region] * max(count - len(home) - starting, 0)
            else:                                   # no node there now: stand-ins wherever is nearest
                surplus += mine[count:]
                missing += [region] * max(count - len(mine) - starting, 0)
        return surplus, missing

    def _needs_restart(self, replica: Replica) -> bool:
        if not self.spec.restart or replica.worker is not None:
            return False
        if replica.state == ReplicaState.STARTING:
            return self.clock() - replica.started_at > self.config.cluster_spec.startup_timeout_s
        return replica.state == ReplicaState.UNHEALTHY and replica.failed_probes >= self.spec.unhealthy_after

    async def probe(self, replica: Replica) -> None:
        handle = replica.handle
        if handle is not None and not handle.is_alive():
            if replica.state != ReplicaState.DEAD:
                log.warning("replica %s: worker exited (%s)", replica.replica_id, _exit_reason(handle))
            replica.state = ReplicaState.DEAD
            return
        ok, state = await self._read(replica)
        if replica.state == ReplicaState.DRAINING:
            return
        if not self._probed(replica, ok):
            return
        if state is not None:
            self._absorb(replica, state)
        if state is not None and state.get("draining"):
            replica.state = ReplicaState.DRAINING
        elif replica.state in (ReplicaState.STARTING, ReplicaState.UNHEALTHY):
            if replica.state == ReplicaState.STARTING:
                log.info("replica %s is ready", replica.replica_id)
            replica.state = ReplicaState.READY

    def _probed(self, target: Replica | PoolWorker, ok: bool) -> bool:
        """Count a probe of a replica or pool worker: a run of `unhealthy_after` failures takes a ready one
        out of routing; a pass resets the run. Returns whether it passed."""
        if ok:
            target.failed_probes = 0
            return True
        target.failed_probes += 1
        if target.state == ReplicaState.READY and target.failed_probes >= self.spec.unhealthy_after:
            target.state = ReplicaState.UNHEALTHY
        return False

    async def _read(self, replica: Replica) -> tuple[bool, dict | None]:
        try:
            if replica.is_external:   # never shown the internal token
                return (await self._get(f"{replica.url}/health", {}))[0] == 200, None
            (health, _), (status, state) = await asyncio.gather(self._get(f"{replica.url}/health"),
                                                                self._get(f"{replica.url}/internal/state"))
            return health == 200 and status == 200, state
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return False, None

    async def _get(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict | None]:
        """GET a worker's URL (with the internal token, unless `headers` says otherwise)."""
        timeout = aiohttp.ClientTimeout(total=self.spec.probe_timeout_s)
        async with self.client.get(url, timeout=timeout, headers=self.auth if headers is None else headers) \
                as response:
            body = await response.json(content_type=None) if response.status == 200 else None
            return response.status, body

    def _absorb(self, replica: Replica, state: dict) -> None:
        model_state = (state.get("models") or {}).get(replica.model)
        replica.last_state = model_state
        if model_state:
            replica.known_hashes.add(bytes.fromhex(h) for h in model_state.get("recent_prefix_block_hashes", ()))

    # -- pools: shared workers hosting many models ---------------------------------------------------
    def _pool_models(self, pool: PoolSpec) -> tuple[ModelSpec, ...]:
        threads = pool.threads or self.config.cluster_spec.threads_per_worker
        models = []
        for m in self.config.models:
            if m.pool == pool.name:
                device = m.engine.device if pool.device == "auto" else pool.device
                models.append(dataclasses.replace(m, engine=dataclasses.replace(m.engine, device=device,
                                                                                num_threads=threads)))
        return tuple(models)

    async def start_pool_worker(self, pool: PoolSpec) -> PoolWorker:
        threads = pool.threads or self.config.cluster_spec.threads_per_worker
        config = dataclasses.replace(self.config, models=self._pool_models(pool), cluster=None, preload=(),
                                     memory_budget_gb=pool.memory_gb, multiplex=pool.multiplex,
                                     load_on_request=False, internal_only=True)
        worker_id = f"{pool.name}-w{next(self._worker_ids)}"
        where = self._region_for(pool.region)
        _, gpus = self._num_gpus(pool.device, where)
        handle = await asyncio.to_thread(self.backend.start_worker, WorkerSpec(
            worker_id, config, threads, gpus, int(pool.memory_gb * 2**30), where))
        worker = PoolWorker(worker_id, pool.name, handle.url, handle, started_at=self.clock(), region=handle.region)
        self.pool_workers.append(worker)
        log.info("started pool worker %s at %s", worker_id, handle.url)
        return worker

    async def probe_worker(self, worker: PoolWorker) -> None:
        if not worker.handle.is_alive():
            if worker.state != ReplicaState.DEAD:
                log.warning("pool worker %s: worker exited (%s)", worker.worker_id, _exit_reason(worker.handle))
            worker.state = ReplicaState.DEAD
            return
        try:
            (health, _), (status, state) = await asyncio.gather(self._get(f"{worker.url}/health"),
                                                                self._get(f"{worker.url}/internal/state"))
            ok = health == 200 and status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            ok, state = False, None
        if not self._probed(worker, ok):
            return
        if worker.state in (ReplicaState.STARTING, ReplicaState.UNHEALTHY):
            log.info("pool worker %s is ready", worker.worker_id)
            worker.state = ReplicaState.READY
        worker.last_state = state
        loaded = state.get("models") or {}
        for replica in self._replicas_on(worker):
            if replica.model in loaded:
                self._absorb(replica, state)
                if replica.state == ReplicaState.UNHEALTHY:
                    replica.state = ReplicaState.READY
            elif replica.state in (ReplicaState.READY, ReplicaState.UNHEALTHY):   # unloaded to make room
                self._lost(replica, "unloaded by its worker")

    def _replicas_on(self, worker: PoolWorker) -> list[Replica]:
        return [r for r in self.replicas.all() if r.worker is worker]

    def _lost(self, replica: Replica, why: str) -> None:
        """A pooled replica is gone without the controller asking: out of the set, its target follows."""
        log.info("replica %s on %s: %s", replica.replica_id, replica.worker.worker_id, why)
        replica.state = ReplicaState.DEAD
        if replica in self.replicas.of(replica.model):
            self.replicas.remove(replica)
        model = next(m for m in self.config.models if m.name == replica.model)
        if model.autoscaling is not None:
            left = sum(1 for r in self.replicas.of(model.name) if r.state != ReplicaState.DRAINING)
            self.targets[model.name] = max(model.autoscaling.min_replicas, min(self.targets[model.name], left))

    async def _reconcile_pools(self) -> None:
        """Dead or hopeless pool workers are replaced (in the background); the models they hosted are
        placed again. A pool short of workers (a start failed) is topped up. A pool with a region keeps
        its workers there: while the region has no live node, stand-ins run in the nearest region; when
        it has one again, workers start at home and, once they are ready, each stand-in retires (its
        models drain and are placed again, at home)."""
        for worker in list(self.pool_workers):
            hopeless = worker.state == ReplicaState.STARTING and \
                self.clock() - worker.started_at > self.config.cluster_spec.startup_timeout_s
            unhealthy = worker.state == ReplicaState.UNHEALTHY and worker.failed_probes >= self.spec.unhealthy_after
            if worker.state != ReplicaState.DEAD and not hopeless and not unhealthy:
                continue
            self.pool_workers.remove(worker)
            worker.state = ReplicaState.DEAD
            for replica in self._replicas_on(worker):
                replica.state = ReplicaState.DEAD
                self.replicas.remove(replica)
            log.warning("pool worker %s is gone", worker.worker_id)
            await asyncio.to_thread(self.backend.stop_worker, worker.handle, False, 5.0)
        if self._stopping or not self.spec.restart:
            return
        live = {n.region for n in self.nodes}
        for pool in self.pools.values():
            mine = [w for w in self.pool_workers if w.pool == pool.name]
            home = [w for w in mine if pool.region is None or w.region == pool.region]
            if pool.region is None or pool.region in live or not self.nodes:
                ready = sum(w.state == ReplicaState.READY for w in home)
                retiring, have = [w for w in mine if w not in home][max(pool.workers - ready, 0):], len(home)
            else:
                retiring, have = [], len(mine)
            for worker in retiring:
                self._retire(worker)
            for _ in range(pool.workers - have - self._starting[("pool", pool.name)]):
                self.num_restarts += 1
                self._in_background(("pool", pool.name), self.start_pool_worker(pool), f"a worker of pool {pool.name}")

    def _retire(self, worker: PoolWorker) -> None:
        """Take a pool worker out of the pool: its models drain there (and are placed again elsewhere at
        once: their replicas no longer count), then it stops."""
        log.info("pool worker %s (region %s) retires: its pool's region has a node again", worker.worker_id,
                 worker.region)
        self.pool_workers.remove(worker)
        replicas = self._replicas_on(worker)
        for replica in replicas:
            replica.state = ReplicaState.DRAINING

        async def retire() -> None:
            await asyncio.gather(*(self.remove_replica(r) for r in replicas), return_exceptions=True)
            await asyncio.to_thread(self.backend.stop_worker, worker.handle, True, self.config.drain_timeout_s + 5)

        task = asyncio.create_task(retire())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _need(self, model: ModelSpec) -> int:
        if model.name not in self._needs:
            spec = next(m for m in self._pool_models(self.pools[model.pool]) if m.name == model.name)
            self._needs[model.name] = model_memory_bytes(resolve_or_pull(spec.source), spec.kind, spec.engine)
        return self._needs[model.name]

    def _view(self, worker: PoolWorker) -> WorkerView:
        state = worker.last_state or {}
        loaded = state.get("models") or {}
        here = self._replicas_on(worker)
        starting = [r for r in here if r.model not in loaded]
        used = (state.get("memory_used_bytes") or 0) + sum(self._needs.get(r.model, 0) for r in starting)
        idle = [m for name, m in loaded.items() if not m.get("pinned") and not m.get("unloading") and
                m.get("in_flight", 0) + m.get("running", 0) + m.get("waiting", 0) == 0 and
                name not in {r.model for r in starting}]
        budget = state.get("memory_budget_bytes") or int(self.pools[worker.pool].memory_gb * 2**30)
        return WorkerView(worker.worker_id, budget, used, frozenset(loaded) | {r.model for r in here},
                          sum(m.get("memory_bytes") or 0 for m in idle), worker.state == ReplicaState.READY and
                          state != {}, max((m.get("idle_s") or 0.0 for m in idle), default=0.0),
                          min((m.get("heat") or 0.0 for m in idle), default=0.0))

    def _place(self, model: ModelSpec) -> Replica | None:
        """Pick a pool worker for one more replica of `model` and load it there (in the background)."""
        workers = [w for w in self.pool_workers if w.pool == model.pool]
        chosen = place(model.name, self._need(model), [self._view(w) for w in workers])
        if chosen is None:
            return None
        worker = next(w for w in workers if w.worker_id == chosen.worker_id)
        replica = Replica(self.replicas.new_id(model.name), model.name, worker.url, worker=worker,
                          started_at=self.clock(), region=worker.region)
        replica.known_hashes.capacity = self.config.gateway.recent_routes
        self.replicas.add(replica)
        task = asyncio.create_task(self._load(replica, model))
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)
        return replica

    async def _load(self, replica: Replica, model: ModelSpec) -> None:
        pinned = model.autoscaling is None or model.autoscaling.min_replicas > 0
        start = self.clock()
        status, body = await self._post(replica.worker, "/internal/load", {"model": model.name, "pinned": pinned},
                                        self.config.cluster_spec.startup_timeout_s)
        if replica.state != ReplicaState.STARTING:
            return
        if status != 200:
            log.warning("loading %s on %s failed (%s): %s", model.name, replica.worker.worker_id, status, body)
            replica.state = ReplicaState.DEAD
            self.replicas.remove(replica)
            await self.probe_worker(replica.worker)     # its memory was not what the last probe said:
            self.wake(model.name)                       # place again from what it says now
            return
        replica.state = ReplicaState.READY
        log.info("replica %s: %s loaded on %s in %.2f s", replica.replica_id, model.name, replica.worker.worker_id,
                 self.clock() - start)
        for name in body.get("evicted", ()):
            for other in self._replicas_on(replica.worker):
                if other.model == name and other.state == ReplicaState.READY:
                    self._lost(other, f"unloaded to make room for {model.name}")

    async def _post(self, worker: PoolWorker, path: str, body: dict, timeout_s: float) -> tuple[int, dict | None]:
        try:
            async with self.client.post(worker.url + path, json=body, headers=self.auth,
                                        timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return 0, {"error": repr(exc)}


def _exit_reason(handle) -> str:
    reason = getattr(handle, "exit_reason", None)
    if reason is not None:
        return reason() or "exited"
    code = getattr(getattr(handle, "process", None), "returncode", None)
    return f"exit status {code}" if code is not None else "exited"
