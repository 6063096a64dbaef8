"""KnownHashes (bounded LRU), Replica.view and the ReplicaSet the controller keeps."""

from __future__ import annotations

import random

import pytest

from infercloud.config import GatewaySpec, ModelSpec
from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.gateway.planner import Plan, RoutePlanner
from infercloud.gateway.proxy import Proxy

from infercloud.controller.replicas import KnownHashes, Replica, ReplicaSet, ReplicaState
from infercloud.router import RouteRequest, make_policy


def h(i: int) -> bytes:
    return i.to_bytes(16, "little")


# -- KnownHashes ---------------------------------------------------------------------------------

def test_known_hashes_bounded_oldest_evicted_first():
    known = KnownHashes(3)
    known.add([h(1), h(2), h(3)])
    assert len(known) == 3 and all(h(i) in known for i in (1, 2, 3))
    known.add([h(4)])
    assert len(known) == 3
    assert h(1) not in known and h(4) in known
    known.add([h(5), h(6)])
    assert [h(i) in known for i in range(1, 7)] == [False, False, False, True, True, True]


def test_known_hashes_re_add_makes_newest():
    known = KnownHashes(3)
    known.add([h(1), h(2), h(3)])
    known.add([h(1)])          # 1 is now the newest, 2 the oldest
    assert len(known) == 3
    known.add([h(4)])
    assert h(1) in known and h(2) not in known and h(3) in known


def test_known_hashes_batch_larger_than_capacity_keeps_its_tail():
    known = KnownHashes(2)
    known.add([h(i) for i in range(5)])
    assert len(known) == 2 and h(3) in known and h(4) in known and h(0) not in known


def test_known_hashes_contains_other_types():
    known = KnownHashes(2)
    known.add([h(1)])
    assert "not a hash" not in known and None not in known


# -- Replica -------------------------------------------------------------------------------------

def test_view_carries_load_and_live_hashes():
    replica = Replica("m-0", "m", "http://127.0.0.1:1", region="eu")
    replica.outstanding_requests, replica.outstanding_tokens = 2, 300
    view = replica.view()
    assert (view.replica_id, view.model, view.outstanding_requests, view.outstanding_tokens, view.region) \
        == ("m-0", "m", 2, 300, "eu")
    assert view.cached_block_hashes is replica.known_hashes
    replica.known_hashes.add([h(7)])                    # added after the view was taken
    assert h(7) in view.cached_block_hashes


def test_prefix_aware_sees_hashes_added_later():
    warm, cold = Replica("m-0", "m", "u0"), Replica("m-1", "m", "u1")
    views = [cold.view(), warm.view()]
    warm.known_hashes.add([h(1), h(2)])
    policy = make_policy("prefix_aware")
    assert policy.choose(RouteRequest("m", (h(1), h(2), h(3))), views).replica_id == "m-0"


def test_replicas_have_their_own_known_hashes():
    a, b = Replica("m-0", "m", "u0"), Replica("m-1", "m", "u1")
    a.known_hashes.add([h(1)])
    assert h(1) not in b.known_hashes


def test_only_ready_is_routable():
    replica = Replica("m-0", "m", "u")
    assert replica.state == ReplicaState.STARTING
    assert [s for s in ReplicaState if Replica("x", "m", "u", state=s).is_routable] == [ReplicaState.READY]


# -- ReplicaSet ----------------------------------------------------------------------------------

def test_new_id_counts_up_never_reused():
    replicas = ReplicaSet()
    first = Replica(replicas.new_id("m"), "m", "u")
    replicas.add(first)
    assert first.replica_id == "m-0"
    replicas.remove(first)
    assert [replicas.new_id("m"), replicas.new_id("other"), replicas.new_id("m")] == ["m-1", "other-2", "m-3"]


def test_routable_membership_and_remove():
    replicas = ReplicaSet()
    by_state = {s: Replica(f"m-{s.value}", "m", "u", state=s) for s in ReplicaState}
    for r in by_state.values():
        replicas.add(r)
    other = Replica("n-0", "n", "u", state=ReplicaState.READY)
    replicas.add(other)
    assert replicas.routable("m") == [by_state[ReplicaState.READY]]
    assert replicas.routable("n") == [other]
    assert replicas.routable("unknown") == []
    assert len(replicas.of("m")) == len(ReplicaState) and len(replicas.all()) == len(ReplicaState) + 1

    replicas.remove(by_state[ReplicaState.READY])
    assert replicas.routable("m") == []
    assert by_state[ReplicaState.READY] not in replicas.of("m")
    replicas.of("m").clear()                            # of() is a copy
    assert len(replicas.of("m")) == len(ReplicaState) - 1


@pytest.mark.parametrize("state, after", [
    (ReplicaState.READY, ReplicaState.UNHEALTHY),
    (ReplicaState.STARTING, ReplicaState.STARTING),
    (ReplicaState.DRAINING, ReplicaState.DRAINING),
    (ReplicaState.UNHEALTHY, ReplicaState.UNHEALTHY),
    (ReplicaState.DEAD, ReplicaState.DEAD),
])
def test_mark_failed(state, after):
    replicas = ReplicaSet()
    replica = Replica("m-0", "m", "u", state=state)
    replicas.add(replica)
    replicas.mark_failed(replica)
    assert replica.state == after
    assert replicas.routable("m") == []


def test_load_on_a_replica_leaves_out_the_prompt_blocks_it_holds():
    """A cache hit costs a replica its uncached tail and output, not the whole prompt (prefix_aware's guard)."""
    planner = RoutePlanner((ModelSpec("m", routing="round_robin"),), 256, random.Random(0), 4096, 1.5)
    proxy = Proxy(ReplicaSet(), planner, None, GatewaySpec(), GatewayMetrics(lambda: []))
    hashes = tuple(hash_token_blocks(list(range(100, 100 + 64)), 16))          # 4 full blocks
    plan = Plan(RouteRequest("m", hashes, 70), outstanding_tokens=70 + 30)
    warm, cold = Replica("m-0", "m", "http://a"), Replica("m-1", "m", "http://b")
    warm.known_hashes.add(hashes[:3])
    proxy._begin(warm, plan)
    proxy._begin(cold, plan)
    assert (warm.outstanding_tokens, cold.outstanding_tokens) == (100 - 48, 100)
    assert hashes[3] in warm.known_hashes and hashes[0] in cold.known_hashes   # recent routing is remembered
    proxy._end(warm, plan)
    proxy._end(cold, plan)
    assert warm.outstanding_tokens == cold.outstanding_tokens == 0
    assert warm.outstanding_requests == cold.outstanding_requests == 0
