"""The autoscaler's traffic feed (fleet/traffic.py), and a linked gateway's sync with the controller's
(gateway/link.py) against a real HTTP stand-in for POST /internal/sync. Fake clocks."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiohttp import web

from infercloud.contracts import ModelState, ReplicaRecord, SyncReply, SyncReport
from infercloud.fleet.replicas import ReplicaSet, ReplicaState
from infercloud.fleet.traffic import REMOTE_HELD_TTL_S, Traffic
from infercloud.gateway.link import ControllerLink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_report_carries_what_happened_since_the_last_and_is_added_to_the_controllers_view():
    clock = Clock()
    remote, home = Traffic(clock), Traffic(clock)
    remote.arrived("m"), remote.stream_done("m", 0.5, 0.05)
    clock.now += 1
    reported_at = clock.now
    clock.now += 1
    remote.arrived("m"), remote.arrived("m"), remote.stream_done("m", 0.9, None)
    for _ in range(3):
        remote.holding("m")
    report = remote.reports_since(reported_at, ["m"])["m"]
    assert (report.arrivals, report.held, report.ttft, report.tpot) == (2, 3, (0.9,), ())
    home.holding("m")
    home.absorb(SyncReport(gateway_id="gw-b", traffic={"m": report, "unknown": report}), {"m"})
    seen = home.observe("m")
    assert seen.held == 4 and seen.last_arrival == clock.now
    assert seen.arrival_rate == 2 / home.window_s and seen.ttft_p90_s == 0.9 and seen.tpot_p90_s is None
    assert home.observe("unknown").arrival_rate == 0     # a model this controller does not serve is left out
    clock.now += REMOTE_HELD_TTL_S + 1                   # gw-b went silent: its held requests no longer count
    assert home.observe("m").held == 1
    home.released("m")
    assert home.observe("m").held == home.held("m") == 0


def test_holding_a_request_asks_for_the_model_at_once():
    wanted = []
    traffic = Traffic(Clock())
    traffic.holding("m")                                 # nobody listening yet: counted all the same
    traffic.on_want = wanted.append
    traffic.holding("m")
    traffic.want("n")
    assert wanted == ["m", "n"] and traffic.held("m") == 2


def test_a_linked_gateway_reports_its_wants_and_mirrors_the_controllers_set():
    reports: list[SyncReport] = []
    replies = [SyncReply(replicas=(ReplicaRecord(replica_id="m-0", model="m", url="http://w", state="ready",
                                                 engine=ModelState(max_model_len=2048)),),
                         targets={"m": 1}),
               SyncReply(replicas=(), targets={"m": 0})]

    async def sync(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer " + "t" * 32
        reports.append(SyncReport.model_validate(await request.json()))
        return web.json_response(replies[len(reports) - 1].model_dump())

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/internal/sync", sync)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        clock, fleet = Clock(), ReplicaSet()
        traffic = Traffic(clock)
        async with aiohttp.ClientSession() as client:
            link = ControllerLink(f"http://127.0.0.1:{port}/", fleet, traffic, ["m"], client, "gw-b", 0.25,
                                  "t" * 32, clock)
            traffic.on_want = link.want
            clock.now += 1
            traffic.arrived("m")
            traffic.holding("m")
            assert await link.sync()
            assert reports[0].wants == ("m",) and reports[0].traffic["m"].arrivals == 1
            (replica,) = fleet.of("m")
            assert replica.state == ReplicaState.READY and replica.engine.max_model_len == 2048
            assert link.public_state()["targets"] == {"m": 1}
            clock.now += 1
            assert await link.sync()                     # a want is sent once; arrivals since the last report
            assert reports[1].wants == () and reports[1].traffic["m"].arrivals == 0
            assert fleet.all() == [] and link.public_state()["targets"] == {"m": 0}
        await runner.cleanup()

    asyncio.run(run())


def test_a_controller_that_cannot_be_reached_leaves_the_set_as_it_was():
    async def run() -> tuple[bool, int]:
        fleet = ReplicaSet()
        fleet.mirror([ReplicaRecord(replica_id="m-0", model="m", url="http://w", state="ready")])
        async with aiohttp.ClientSession() as client:
            link = ControllerLink("http://127.0.0.1:9", fleet, Traffic(Clock()), ["m"], client, "gw", 0.25, "t" * 32)
            ok = await link.sync()
        return ok, len(fleet.all())

    assert asyncio.run(run()) == (False, 1)
