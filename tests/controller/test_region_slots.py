"""The one stand-in rule for a region slot (placement.fill_slot), used for a model's dedicated replicas and
a pool's workers alike: which members to retire and how many to start, as nodes of a region go and come
back; and region_for / device_for. Pure functions: members and nodes are plain objects."""

from __future__ import annotations

from infercloud.cluster.base import NodeView
from infercloud.config import RegionSpec
from infercloud.controller.placement import device_for, fill_slot, region_for, region_slots
from infercloud.fleet.replicas import PoolWorker, Replica, ReplicaState
from infercloud.router.regions import RegionMap

A, B, C = "region-a", "region-b", "region-c"


def nodes(*regions: str, gpus: int = 0) -> list[NodeView]:
    return [NodeView(f"n-{r}", 4, None, "cpu", {"region": r}, num_gpus=gpus) for r in regions]


def member(region: str | None, state=ReplicaState.READY, started_at: float = 0.0) -> Replica:
    return Replica(f"m-{region}-{started_at}", "m", "http://x", state=state, region=region, started_at=started_at)


def test_an_empty_slot_starts_its_count():
    assert region_slots({A: 1, B: 1}, 2) == {A: 1, B: 1}
    assert fill_slot([], 1, A, nodes(A, B), starting=0) == ([], 1)
    assert fill_slot([], 1, A, nodes(A, B), starting=1) == ([], 0)      # one is starting already
    assert fill_slot([member(A)], 1, A, nodes(A, B), starting=0) == ([], 0)


def test_a_region_with_no_node_gets_a_stand_in_which_is_kept_while_the_region_is_gone():
    live = nodes(A)                                     # region-b's node died; its replica went with it
    assert fill_slot([], 1, B, live, starting=0) == ([], 1)
    stand_in = member(A, started_at=1.0)                # started in the nearest region
    assert fill_slot([stand_in], 1, B, live, starting=0) == ([], 0)


def test_when_the_region_is_back_the_stand_in_retires_only_once_a_home_member_is_ready():
    stand_in = member(A, started_at=1.0)
    assert fill_slot([stand_in], 1, B, nodes(A, B), starting=0) == ([], 1)   # home starts, stand-in serves
    home = member(B, state=ReplicaState.STARTING, started_at=2.0)
    assert fill_slot([stand_in, home], 1, B, nodes(A, B), starting=0) == ([], 0)
    home.state = ReplicaState.READY
    assert fill_slot([stand_in, home], 1, B, nodes(A, B), starting=0) == ([stand_in], 0)


def test_beyond_the_count_the_newest_goes():
    old, newest = member(A, started_at=0.0), member(A, started_at=5.0)
    assert fill_slot([newest, old], 1, A, nodes(A, B), starting=0) == ([newest], 0)
    assert fill_slot([newest, old], 1, B, nodes(A), starting=0) == ([newest], 0)   # stand-ins too


def test_a_slot_anywhere_or_without_an_inventory_has_no_stand_ins():
    assert fill_slot([member(None)], 2, None, nodes(A), starting=0) == ([], 1)
    assert fill_slot([member(C)], 1, A, [], starting=0) == ([], 1)     # no inventory: start one at home


def test_pool_workers_follow_the_same_rule():
    away = PoolWorker("p-w0", "p", "http://x", None, state=ReplicaState.READY, region=A, started_at=0.0)
    home = PoolWorker("p-w1", "p", "http://y", None, state=ReplicaState.READY, region=B, started_at=1.0)
    assert fill_slot([away], 1, B, nodes(A), starting=0) == ([], 0)
    assert fill_slot([away], 1, B, nodes(A, B), starting=0) == ([], 1)
    assert fill_slot([away, home], 1, B, nodes(A, B), starting=0) == ([away], 0)


def test_region_for_picks_the_region_or_the_nearest_live_one():
    regions = RegionMap.from_specs((RegionSpec(A, {B: 10, C: 80}), RegionSpec(B), RegionSpec(C)))
    assert region_for(A, nodes(A, B), regions) == A
    assert region_for(A, nodes(B, C), regions) == B
    assert region_for(A, [], regions) == A              # no inventory: as asked
    assert region_for(None, nodes(B), regions) is None


def test_device_for_auto_takes_a_gpu_where_the_region_has_one():
    assert device_for("auto", A, nodes(A, gpus=1)) == ("cuda", 1)
    assert device_for("auto", B, nodes(A, gpus=1)) == ("auto", 0)     # the engine picks: no GPU reserved
    assert device_for("cpu", A, nodes(A, gpus=1)) == ("cpu", 0)
    assert device_for("cuda", None, []) == ("cuda", 1)
