"""Regions: latencies between regions, their order from a home region, and the replicas a request is offered."""

from __future__ import annotations

import math

from infercloud.config import RegionSpec
from infercloud.router.base import ReplicaView
from infercloud.router.regions import RegionMap, regional_candidates

FULL_AT = 2
# a -- 10 ms -- b -- 50 ms -- c ; d: no latency to anyone
REGIONS = RegionMap.from_specs([RegionSpec("a", {"b": 10}), RegionSpec("b", {"c": 50}), RegionSpec("c"),
                                RegionSpec("d")])


def replica(replica_id: str, region: str | None, requests: int = 0) -> ReplicaView:
    return ReplicaView(replica_id, "m", outstanding_requests=requests, region=region)


def offered(replicas, home: str | None, allowed=None) -> list[str]:
    chosen = regional_candidates(replicas, home, frozenset(allowed) if allowed is not None else None, REGIONS,
                                 FULL_AT)
    return [r.replica_id for r in chosen]


# -- RegionMap -----------------------------------------------------------------------------------

def test_latency_given_on_either_side_counts_for_both():
    assert REGIONS.distance("a", "b") == REGIONS.distance("b", "a") == 10.0
    assert REGIONS.distance("c", "b") == REGIONS.distance("b", "c") == 50.0


def test_distance_is_zero_to_itself_and_inf_when_unknown():
    assert REGIONS.distance("a", "a") == REGIONS.distance("d", "d") == 0.0
    assert REGIONS.distance("a", "c") == math.inf         # no path-finding: only what is configured
    assert REGIONS.distance("a", "d") == math.inf
    assert REGIONS.distance("a", None) == REGIONS.distance(None, "a") == REGIONS.distance(None, None) == math.inf
    assert RegionMap().distance("x", "y") == math.inf


def test_order_nearest_first_unknown_after_known_unlabelled_last():
    assert REGIONS.order("a", ["d", None, "c", "b", "a"]) == ["a", "b", "c", "d", None]
    assert REGIONS.order("c", ["a", None, "b", "c"]) == ["c", "b", "a", None]


def test_order_ties_go_by_name_and_duplicates_collapse():
    ties = RegionMap.from_specs([RegionSpec("home", {"z": 5, "y": 5})])
    assert ties.order("home", ["z", "y", "y", "q", "p"]) == ["y", "z", "p", "q"]


def test_nearest_is_home_when_present_else_the_closest():
    assert REGIONS.nearest("b", {"a", "b", "c"}) == "b"
    assert REGIONS.nearest("c", {"a", "b"}) == "b"
    assert REGIONS.nearest("a", {"c", "d"}) == "c"       # both unknown: by name
    assert REGIONS.nearest("a", set()) is None
    assert REGIONS.nearest(None, []) is None


# -- regional_candidates -------------------------------------------------------------------------

def test_home_regions_replicas_with_room_are_offered():
    replicas = [replica("a0", "a"), replica("a1", "a", requests=FULL_AT), replica("b0", "b"), replica("c0", "c")]
    assert offered(replicas, "a") == ["a0"]
    assert offered(replicas, "c") == ["c0"]


def test_spills_to_the_nearest_region_with_room_when_home_is_full():
    replicas = [replica("a0", "a", FULL_AT), replica("a1", "a", FULL_AT + 3), replica("c0", "c"),
                replica("b0", "b", FULL_AT), replica("b1", "b", FULL_AT - 1)]
    assert offered(replicas, "a") == ["b1"]               # b is nearer than c; b0 is full
    replicas[4] = replica("b1", "b", FULL_AT)
    assert offered(replicas, "a") == ["c0"]


def test_spills_when_home_has_no_replica():
    replicas = [replica("c0", "c"), replica("b0", "b"), replica("x0", None)]
    assert offered(replicas, "a") == ["b0"]
    assert offered([replica("x0", None), replica("d0", "d")], "a") == ["d0"]   # a named region before unlabelled


def test_when_every_replica_is_full_the_home_most_regions_are_offered():
    replicas = [replica("c0", "c", FULL_AT), replica("b0", "b", 9), replica("b1", "b", FULL_AT)]
    assert offered(replicas, "a") == ["b0", "b1"]
    replicas.append(replica("a0", "a", 50))
    assert offered(replicas, "a") == ["a0"]


def test_residency_removes_other_regions_entirely():
    replicas = [replica("a0", "a", FULL_AT), replica("b0", "b"), replica("c0", "c")]
    assert offered(replicas, "a", allowed={"a"}) == ["a0"]          # full, yet never spills out of a
    assert offered(replicas, "a", allowed={"a", "c"}) == ["c0"]     # spills only within its regions
    assert offered(replicas, "a", allowed={"d"}) == []              # none where it may be served
    assert offered(replicas, None, allowed={"b", "c"}) == ["b0", "c0"]
    assert offered([replica("x0", None)], "a", allowed={"a"}) == []  # unlabelled is in no allowed region


def test_without_a_home_every_allowed_replica_is_offered():
    replicas = [replica("a0", "a", FULL_AT), replica("b0", "b"), replica("x0", None)]
    assert offered(replicas, None) == ["a0", "b0", "x0"]
    assert offered([], None) == [] and offered([], "a") == []
