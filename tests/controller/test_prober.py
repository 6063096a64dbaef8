"""The controller's prober and pool placement against a real HTTP stand-in for a worker (its /health and
/internal/state as contracts.WorkerState): state transitions, the engine report reaching the replica, and
a pooled model placed by the memory the workers report. No model, no processes."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiohttp import web

from infercloud.config import ClusterSpec, ControllerSpec, ModelSpec, PoolSpec, ServerConfig
from infercloud.contracts import ModelState, UnloadedModel, WorkerState
from infercloud.controller.background import Background
from infercloud.controller.pools import PoolManager
from infercloud.controller.prober import Prober
from infercloud.fleet.replicas import PoolWorker, Replica, ReplicaSet, ReplicaState

TOKEN = {"Authorization": "Bearer " + "t" * 32}


class StandIn:
    """A worker's internal plane: /health and /internal/state, answering only the internal token."""

    def __init__(self, state: WorkerState):
        self.state = state
        self.healthy = True

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=200 if self.healthy else 503)

    async def internal_state(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != TOKEN["Authorization"]:
            return web.json_response({"error": {"message": "no"}}, status=401)
        return web.json_response(self.state.model_dump())

    async def serve(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/internal/state", self.internal_state)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        return runner, f"http://127.0.0.1:{sock.getsockname()[1]}"


def run(scenario) -> None:
    asyncio.run(scenario())


def test_a_replica_turns_ready_reports_its_engine_drains_and_fails_after_unhealthy_after():
    async def scenario():
        worker = StandIn(WorkerState(models={"m": ModelState(running=3, recent_prefix_block_hashes=("ab" * 16,))}))
        runner, url = await worker.serve()
        async with aiohttp.ClientSession() as client:
            prober = Prober(client, ControllerSpec(unhealthy_after=2, probe_timeout_s=2.0), TOKEN)
            replica = Replica("m-0", "m", url)
            state = await prober.probe(replica)
            assert state.models["m"].running == 3
            assert (replica.state, replica.probes_passed, replica.engine.running) == (ReplicaState.READY, 1, 3)
            assert bytes.fromhex("ab" * 16) in replica.reported_hashes
            worker.healthy = False
            assert await prober.probe(replica) is None and replica.state == ReplicaState.READY   # one failure
            await prober.probe(replica)
            assert (replica.state, replica.failed_probes, replica.probes_passed) == (ReplicaState.UNHEALTHY, 2, 1)
            worker.healthy = True
            await prober.probe(replica)
            assert (replica.state, replica.failed_probes) == (ReplicaState.READY, 0)
            worker.state = WorkerState(draining=True)
            await prober.probe(replica)
            assert replica.state == ReplicaState.DRAINING
            wrong = Prober(client, ControllerSpec(unhealthy_after=1), {"Authorization": "Bearer wrong"})
            stranger = Replica("m-1", "m", url)
            assert await wrong.probe(stranger) is None and stranger.failed_probes == 1   # 401 is a failed probe
            external = Replica("ext-0", "m", url, is_external=True)
            assert await wrong.probe(external) is None and external.state == ReplicaState.READY   # /health only
        await runner.cleanup()

    run(scenario)


def test_a_pooled_model_is_placed_by_the_memory_its_workers_report():
    async def scenario():
        gib = 2**30
        small = WorkerState(memory_budget_bytes=4 * gib, memory_used_bytes=3 * gib,
                            unloaded={"big": UnloadedModel(memory_bytes=2 * gib)})
        roomy = WorkerState(memory_budget_bytes=4 * gib, memory_used_bytes=1 * gib,
                            unloaded={"big": UnloadedModel(memory_bytes=2 * gib)})
        config = ServerConfig(models=(ModelSpec("big", pool="p"), ModelSpec("unsized", pool="p")),
                              cluster=ClusterSpec(pools=(PoolSpec("p", workers=2),)))
        fleet = ReplicaSet()
        async with aiohttp.ClientSession() as client:
            background = Background()
            pools = PoolManager(config, None, fleet, Prober(client, config.controller, TOKEN), background,
                                lambda: 0.0, on_lost=lambda replica: None, wake=lambda model: None)
            for worker_id, state in (("p-w0", small), ("p-w1", roomy)):
                pools.workers.append(PoolWorker(worker_id, "p", "http://127.0.0.1:9", None, ReplicaState.READY,
                                                last_state=state))
            assert pools.place(config.models[1]) is None          # no worker has sized it: not placed blind
            replica = pools.place(config.models[0])
            assert replica.worker.worker_id == "p-w1" and fleet.of("big") == [replica]
            await background.wait()                               # its load cannot reach the worker: undone
            assert fleet.of("big") == []
    run(scenario)
