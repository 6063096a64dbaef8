"""Controller: observe, decide, act. Keeps each model's replicas at their target and tells gateways the set.

The loop, every `probe_interval_s` (and at once for a model a gateway holds requests for: `wake`):
  1. observe: read the backend's node inventory (on Ray: nodes, resources, labels); probe every replica
     and pool worker (prober.py); for an autoscaled model, take one Observation of engine load (from the
     probes) and gateway traffic (fleet/traffic.py: arrivals, requests held, stream TTFT/TPOT).
  2. decide: a model's target is `replicas`, or, with `autoscaling`, what autoscaler.decide() says from its
     observations; it is split over the model's regions (placement.region_slots) and each slot is filled
     by one rule (placement.fill_slot): home first, stand-ins in the nearest region while home has no node.
  3. act: dead replicas leave the set; a dedicated replica that failed `unhealthy_after` probes (or never
     came up) is replaced (dedicated.py); replicas beyond the target (the newest first) drain in the
     background; missing ones are started (dedicated) or placed on a pool worker (pools.py).
The controller is the one writer of the replica set (fleet/); gateways read it, and a gateway without a
controller mirrors it through POST /internal/sync (`sync`, contracts.SyncReport/SyncReply).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable

import aiohttp

from infercloud.cluster.base import ClusterBackend, NodeView
from infercloud.config import ModelSpec, ServerConfig
from infercloud.contracts import ControlState, SyncReply, SyncReport, TargetChange
from infercloud.controller.autoscaler import Observation, ScalingContext, ScalingDecision, decide
from infercloud.controller.background import Background
from infercloud.controller.dedicated import DedicatedReplicas
from infercloud.controller.placement import fill_slot, region_slots
from infercloud.controller.pools import PoolManager
from infercloud.controller.prober import Prober
from infercloud.fleet.replicas import Replica, ReplicaSet, ReplicaState
from infercloud.fleet.traffic import Traffic
from infercloud.internal_token import bearer

log = logging.getLogger("infercloud.controller")
MAX_CHANGES = 100   # target changes kept for the dashboard's timeline (ControlState.changes)


class Controller:
    def __init__(self, config: ServerConfig, backend: ClusterBackend, fleet: ReplicaSet, traffic: Traffic,
                 client: aiohttp.ClientSession, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.config = config
        self.spec = config.controller
        self.backend = backend
        self.fleet = fleet
        self.traffic = traffic
        self.clock = clock
        self.wall_clock = wall_clock
        self.models = {m.name: m for m in config.models}
        self.targets = {m.name: m.replicas for m in config.models}
        self.changes: deque[TargetChange] = deque(maxlen=MAX_CHANGES)
        self.decisions: dict[str, ScalingDecision] = {}
        self.on_decision: Callable[[str, str, int], None] | None = None   # (model, action, target): metrics
        self.num_restarts = 0
        self.nodes: list[NodeView] = []
        self._observations: dict[str, deque[Observation]] = {m.name: deque(maxlen=720) for m in config.models}
        self.prober = Prober(client, self.spec, bearer(config.internal_token))
        self.background = Background()
        self.dedicated = DedicatedReplicas(config, backend, fleet, clock)
        self.pools = PoolManager(config, backend, fleet, self.prober, self.background, clock, self._lost, self.wake)
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._woken: set[str] = set()

    # -- gateways ------------------------------------------------------------------------------------
    def wake(self, model: str) -> None:
        """Reconcile `model` now (a request waits for it), not at the next tick."""
        self._woken.add(model)
        self._wake.set()

    def sync(self, report: SyncReport) -> SyncReply:
        """A gateway without a controller (gateway/link.py) reports its traffic and the models it waits for;
        it gets back every replica and what this controller decided."""
        self.traffic.absorb(report, set(self.targets))
        for model in report.wants:
            if model in self.targets:
                self.wake(model)
        return SyncReply(replicas=tuple(r.record() for r in self.fleet.all()), **dict(self.control_state()))

    def control_state(self) -> ControlState:
        return ControlState(targets=dict(self.targets), changes=tuple(self.changes),
                            pool_workers=tuple(w.record() for w in self.pools.workers),
                            nodes=tuple(dataclasses.asdict(n) for n in self.nodes))

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._read_nodes()
        for pool in self.pools.pools.values():
            for _ in range(pool.workers):
                await self.pools.start_worker(pool, self.nodes)
        for model in self.config.models:
            for url in model.external:
                self.fleet.add(Replica(self.fleet.new_id(model.name), model.name, url, is_external=True,
                                       started_at=self.clock()))
            if model.pool is None:
                for region in self._slots(model)[1]:
                    await self.dedicated.start(model, region, self.nodes)
        self._task = asyncio.create_task(self._loop(), name="controller")

    async def wait_ready(self, timeout_s: float) -> bool:
        """Until every model has its native replicas READY (True) or the timeout passes (False): as many as
        it starts with, or fewer where the autoscaler has lowered its target meanwhile (a model idle to zero
        before its first replica was up). External replicas are probed once, not waited for: routing learns
        of them when they come up."""
        deadline = self.clock() + timeout_s
        await asyncio.gather(*(self.prober.probe(r) for r in self.fleet.all() if r.is_external))
        while self.clock() < deadline:
            if all(sum(not r.is_external for r in self.fleet.routable(m.name))
                   >= min(m.replicas, self.targets[m.name]) for m in self.config.models):
                return True
            await asyncio.sleep(0.1)
        return False

    async def stop(self) -> None:
        """Stop the loop and drain every worker (in parallel)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.background.wait()
        await asyncio.gather(*(self.remove(r) for r in self.fleet.all()
                               if r.state != ReplicaState.DRAINING and r.worker is None), return_exceptions=True)
        await self.background.wait()
        await self.pools.stop()

    async def remove(self, replica: Replica, drain: bool = True) -> None:
        """Out of routing now; gone (its worker drained or killed, or the model unloaded) when this returns."""
        replica.state = ReplicaState.DRAINING
        if replica.worker is not None:
            await self.pools.unload(replica)
        elif replica.handle is not None:
            await self.dedicated.stop(replica, drain)
        replica.state = ReplicaState.DEAD
        self.fleet.remove(replica)

    # -- the loop ------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        next_tick = self.clock()
        while not self._stopping:
            try:
                woken, self._woken = self._woken, set()
                if self.clock() >= next_tick:
                    next_tick = self.clock() + self.spec.probe_interval_s
                    await self.tick()
                else:
                    await self._tick_woken(woken)
            except Exception:  # noqa: BLE001 - the loop must survive one bad tick
                log.exception("controller tick failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_tick - self.clock()))
            except asyncio.TimeoutError:
                pass

    async def tick(self) -> None:
        await self._read_nodes()
        await asyncio.gather(*(self.prober.probe(r) for r in self.fleet.all()
                               if r.state != ReplicaState.DEAD and r.worker is None),
                             *(self.pools.probe(w) for w in self.pools.workers))
        self.num_restarts += await self.pools.reconcile(self.nodes, self.spec.restart and not self._stopping,
                                                        self.spec.unhealthy_after)
        for model in self.config.models:
            await self._reconcile(model)

    async def _tick_woken(self, woken: set[str]) -> None:
        """Models a gateway waits for: their pool workers are probed now (one may have unloaded the model),
        then they are reconciled."""
        workers = {r.worker for r in self.fleet.all() if r.model in woken and r.worker is not None}
        await asyncio.gather(*(self.pools.probe(w) for w in workers))
        for model in self.config.models:
            if model.name in woken:
                await self._reconcile(model)

    async def _read_nodes(self) -> None:
        try:
            self.nodes = await asyncio.to_thread(self.backend.nodes)
        except Exception:  # noqa: BLE001 - keep the last inventory when the cluster cannot be read
            log.exception("reading the node inventory failed")

    def _autoscale(self, model: ModelSpec) -> None:
        """Observe the model once and set its target from the autoscaler's decision."""
        native = [r for r in self.fleet.of(model.name) if not r.is_external and r.state != ReplicaState.DRAINING]
        engines = [r.engine for r in native if r.is_ready and r.engine is not None]
        traffic = self.traffic.observe(model.name)
        now = self.clock()
        self._observations[model.name].append(Observation(
            now, len(native), sum(e.running for e in engines), sum(e.waiting for e in engines) + traffic.held,
            traffic.ttft_p90_s, traffic.tpot_p90_s, max((e.kv_usage for e in engines if e.kv_usage is not None),
                                                        default=None), traffic.arrival_rate))
        spec = model.autoscaling   # the model's own SLO targets stand in for ones the autoscaling section leaves out
        spec = dataclasses.replace(spec, ttft_slo_s=spec.ttft_slo_s if spec.ttft_slo_s is not None else model.slo.ttft_s,
                                   tpot_slo_s=spec.tpot_slo_s if spec.tpot_slo_s is not None else model.slo.tpot_s)
        decision = decide(ScalingContext(model.name, spec, now, self.targets[model.name],
                                         list(self._observations[model.name]), traffic.last_arrival))
        if self.on_decision is not None:
            current = self.targets[model.name]
            action = "scale_up" if decision.target_replicas > current else \
                "scale_down" if decision.target_replicas < current else "hold"
            self.on_decision(model.name, action, decision.target_replicas)
        self._set_target(model.name, decision.target_replicas, decision.reason)
        self.decisions[model.name] = decision

    def _set_target(self, model: str, target: int, reason: str, who: str = "autoscaler") -> None:
        before = self.targets[model]
        if target != before:
            log.info("%s: %s %d -> %d replicas (%s)", who, model, before, target, reason)
            self.changes.append(TargetChange(time=self.wall_clock(), model=model, before=before, after=target,
                                             reason=reason))
        self.targets[model] = target

    async def _reconcile(self, model: ModelSpec) -> None:
        if model.autoscaling is not None and not self._stopping:
            self._autoscale(model)
        for replica in self.fleet.of(model.name):
            if replica.is_external or replica.worker is not None:
                continue
            if replica.state == ReplicaState.DEAD:
                self.fleet.remove(replica)
                log.warning("replica %s is gone", replica.replica_id)
            elif self.spec.restart and self.dedicated.needs_restart(replica, self.spec.unhealthy_after):
                log.warning("replica %s failed %d probes: restarting it", replica.replica_id, replica.failed_probes)
                await self.remove(replica, drain=False)
        if self._stopping:
            return
        surplus, missing = self._slots(model)
        for replica in surplus:
            log.info("draining replica %s (beyond the target of %s)", replica.replica_id, model.name)
            replica.state = ReplicaState.DRAINING
            self.background.spawn(self.remove(replica))
        if not self.spec.restart and model.autoscaling is None:
            return
        for region in missing:
            self.num_restarts += 1
            if model.pool is not None:
                self.pools.place(model)
            else:
                self.background.start((model.name, region), self.dedicated.start(model, region, self.nodes),
                                      f"a replica of {model.name}" + (f" for region {region}" if region else ""))

    def _slots(self, model: ModelSpec) -> tuple[list[Replica], list[str | None]]:
        """Against the model's target split by region: the replicas to drain, and the region slot of each
        replica to start."""
        native = [r for r in self.fleet.of(model.name) if not r.is_external and r.state != ReplicaState.DRAINING]
        slots = region_slots(model.regions, self.targets[model.name])
        surplus = [r for r in native if r.wanted_region not in slots]
        missing: list[str | None] = []
        for region, count in slots.items():
            retire, start = fill_slot([r for r in native if r.wanted_region == region], count, region, self.nodes,
                                      self.background.starting[(model.name, region)])
            surplus += retire
            missing += [region] * start
        return surplus, missing

    def _lost(self, replica: Replica) -> None:
        """A pooled replica left without the controller asking (its worker unloaded the model to make room):
        an autoscaled model's target follows, and comes back when requests for it are held."""
        model = self.models[replica.model]
        if model.autoscaling is not None:
            left = sum(1 for r in self.fleet.of(model.name) if r.state != ReplicaState.DRAINING)
            self._set_target(model.name, max(model.autoscaling.min_replicas, min(self.targets[model.name], left)),
                             f"{replica.replica_id} was unloaded from its pool worker", who="controller")
