"""Dedicated replicas: one worker process per replica, started by the cluster backend for a model's region
slot, replaced when it dies or stops answering, drained when it is beyond the model's target.

A replica of a slot in region R starts on a node of R, or, when R has no live node, of the nearest region
that has one (placement.region_for); its `region` is where it runs, its `wanted_region` the slot it fills.
Removing one goes through drain: it leaves routing, then its worker gets SIGTERM and finishes what it has
in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from infercloud.cluster.base import ClusterBackend, NodeView, WorkerSpec
from infercloud.config import ModelSpec, ServerConfig, WorkerConfig
from infercloud.controller.placement import device_for, region_for
from infercloud.fleet.replicas import Replica, ReplicaSet, ReplicaState
from infercloud.router.regions import RegionMap

log = logging.getLogger("infercloud.controller")


class DedicatedReplicas:
    def __init__(self, config: ServerConfig, backend: ClusterBackend, fleet: ReplicaSet,
                 clock: Callable[[], float]):
        self.config = config
        self.backend = backend
        self.fleet = fleet
        self.clock = clock
        self.region_map = RegionMap.from_specs(config.regions)

    def worker_config(self, model: ModelSpec, device: str, threads: int) -> WorkerConfig:
        """A dedicated worker's own config: the one model, on its device and threads, loaded at start."""
        return self.config.cloud_worker((model.for_worker(device=device, num_threads=threads),))

    async def start(self, model: ModelSpec, region: str | None, nodes: list[NodeView]) -> Replica:
        """One more replica of `model`, for its slot in `region` (None: anywhere)."""
        threads = model.threads or self.config.cluster_spec.threads_per_worker
        where = region_for(region, nodes, self.region_map)
        if where != region:
            log.warning("no live node in region %s: starting a replica of %s in %s", region, model.name, where)
        device, gpus = device_for(model.engine.device, where, nodes)
        replica_id = self.fleet.new_id(model.name)
        handle = await asyncio.to_thread(self.backend.start_worker, WorkerSpec(
            replica_id, self.worker_config(model, device, threads), threads, gpus, region=where))
        replica = Replica(replica_id, model.name, handle.url, handle=handle, started_at=self.clock(),
                          region=handle.region, wanted_region=region)
        self.fleet.add(replica)
        log.info("started replica %s at %s", replica_id, handle.url)
        return replica

    async def stop(self, replica: Replica, drain: bool = True) -> None:
        """Its worker drains (or is killed) and is gone when this returns."""
        await asyncio.to_thread(self.backend.stop_worker, replica.handle, drain, self.config.drain_timeout_s + 5)

    def needs_restart(self, replica: Replica, unhealthy_after: int) -> bool:
        """Not up within the startup timeout, or failing `unhealthy_after` probes in a row."""
        if replica.state == ReplicaState.STARTING:
            return self.clock() - replica.started_at > self.config.cluster_spec.startup_timeout_s
        return replica.state == ReplicaState.UNHEALTHY and replica.failed_probes >= unhealthy_after
