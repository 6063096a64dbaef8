"""The controller's per-region bookkeeping (Controller._slots): which replicas to start where and which to
drain, as nodes of a region go and come back. No processes: replicas and nodes are plain objects."""

from __future__ import annotations

from infercloud.cluster.base import NodeView
from infercloud.config import ModelSpec, ServerConfig
from infercloud.controller.controller import Controller
from infercloud.controller.replicas import Replica, ReplicaSet, ReplicaState

A, B = "region-a", "region-b"
MODEL = ModelSpec("m", regions={A: 1, B: 1}, replicas=2)


def controller(*regions_alive: str) -> Controller:
    c = Controller(ServerConfig(models=(MODEL,)), backend=None, replicas=ReplicaSet(), client=None)
    c.nodes = [NodeView(f"n-{r}", 4, None, "cpu", {"region": r}) for r in regions_alive]
    return c


def add(c: Controller, wanted: str, region: str, state=ReplicaState.READY, started_at: float = 0.0) -> Replica:
    replica = Replica(c.replicas.new_id("m"), "m", "http://x", state=state, region=region, wanted_region=wanted,
                      started_at=started_at)
    c.replicas.add(replica)
    return replica


def test_one_replica_per_region_is_started_in_each():
    c = controller(A, B)
    assert c._slots(MODEL) == ([], [A, B])
    add(c, A, A), add(c, B, B)
    assert c._slots(MODEL) == ([], [])


def test_a_region_with_no_node_gets_a_stand_in_which_is_kept_while_the_region_is_gone():
    c = controller(A)                       # region-b's node died; its replica went with it
    add(c, A, A)
    assert c._slots(MODEL) == ([], [B])     # started for region-b's slot (in the nearest region: start_replica)
    add(c, B, A, started_at=1.0)
    assert c._slots(MODEL) == ([], [])


def test_when_the_region_is_back_the_stand_in_drains_only_once_a_home_replica_is_ready():
    c = controller(A, B)
    add(c, A, A)
    stand_in = add(c, B, A, started_at=1.0)
    assert c._slots(MODEL) == ([], [B])     # a replica at home is started; the stand-in keeps serving
    home = add(c, B, B, state=ReplicaState.STARTING, started_at=2.0)
    assert c._slots(MODEL) == ([], [])
    home.state = ReplicaState.READY
    assert c._slots(MODEL) == ([stand_in], [])


def test_beyond_the_count_the_newest_is_drained():
    c = controller(A, B)
    add(c, A, A, started_at=0.0), add(c, B, B, started_at=0.0)
    newest = add(c, A, A, started_at=5.0)
    assert c._slots(MODEL) == ([newest], [])


def test_a_model_without_regions_is_placed_anywhere():
    model = ModelSpec("m", replicas=2)
    c = Controller(ServerConfig(models=(model,)), backend=None, replicas=ReplicaSet(), client=None)
    c.nodes = [NodeView("local", 2, None, "cpu")]
    add(c, None, None)
    assert c._slots(model) == ([], [None])
