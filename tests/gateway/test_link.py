"""A gateway linked to another's controller: its traffic reports (Traffic.since / absorb) and how it makes
the controller's replica set its own (ControllerLink.apply). Fake clocks, no network."""

from __future__ import annotations

from infercloud.controller.replicas import ReplicaSet, ReplicaState, Traffic
from infercloud.gateway.link import FAILED_HOLD_S, ControllerLink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_report_carries_what_happened_since_the_last_and_is_added_to_the_controllers_view():
    clock = Clock()
    remote, home = Traffic(clock), Traffic(clock)
    remote.arrived(), remote.stream_done(0.5, 0.05)
    clock.now += 1
    reported_at = clock.now
    clock.now += 1
    remote.arrived(), remote.arrived(), remote.stream_done(0.9, None)
    remote.held = 3
    report = remote.since(reported_at)
    assert report == {"arrivals": 2, "held": 3, "ttft": [0.9], "tpot": []}
    home.held = 1
    home.absorb("gw-b", report)
    assert home.held_everywhere == 4 and home.last_arrival == clock.now
    assert home.arrival_rate() == 2 / home.window_s and home.p90("ttft") == 0.9
    clock.now += Traffic.REMOTE_HELD_TTL_S + 1         # gw-b went silent: its held requests no longer count
    assert home.held_everywhere == 1


def link(clock: Clock) -> tuple[ControllerLink, ReplicaSet]:
    replicas = ReplicaSet(clock)
    return ControllerLink("http://controller", replicas, ["m"], None, "gw-b", 0.25, "t" * 32, clock), replicas


def entry(replica_id: str, state: str = "ready", url: str = "http://w", region: str | None = None) -> dict:
    return {"replica_id": replica_id, "model": "m", "url": url, "external": False, "state": state,
            "region": region, "engine": {"max_model_len": 2048}}


def test_apply_adds_updates_in_place_and_removes():
    clock = Clock()
    gw, replicas = link(clock)
    gw.apply([entry("m-0"), entry("m-1", "starting")])
    first = replicas.of("m")[0]
    first.outstanding_requests = 2                      # this gateway's own load on it
    gw.apply([entry("m-0", url="http://moved", region="eu"), entry("m-1")])
    assert replicas.of("m")[0] is first and first.outstanding_requests == 2
    assert (first.url, first.region, first.last_state) == ("http://moved", "eu", {"max_model_len": 2048})
    assert [r.state for r in replicas.of("m")] == [ReplicaState.READY, ReplicaState.READY]
    gw.apply([entry("m-1")])
    assert [r.replica_id for r in replicas.all()] == ["m-1"]


def test_a_replica_this_gateway_could_not_reach_stays_out_of_routing_for_a_while():
    clock = Clock()
    gw, replicas = link(clock)
    gw.apply([entry("m-0")])
    (replica,) = replicas.of("m")
    replicas.mark_failed(replica)
    gw.apply([entry("m-0")])                            # the controller's probes have not seen it yet
    assert replica.state == ReplicaState.UNHEALTHY
    clock.now += FAILED_HOLD_S + 0.1
    gw.apply([entry("m-0")])
    assert replica.state == ReplicaState.READY


def test_a_request_waiting_for_a_model_is_passed_on_at_the_next_sync():
    clock = Clock()
    gw, replicas = link(clock)
    replicas.want("m")
    assert gw._wants == {"m"} and gw._wake.is_set()

