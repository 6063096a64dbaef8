"""The gateway's load book: what it has in flight on each replica, the hashes it routed there, and the
replicas it saw fail (out of its routing until the controller's next passing probe)."""

from __future__ import annotations

from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.fleet.replicas import Replica, ReplicaSet, ReplicaState
from infercloud.gateway.load_book import LoadBook
from infercloud.router import RouteRequest, make_policy


def h(i: int) -> bytes:
    return i.to_bytes(16, "little")


def book(*replicas: Replica) -> LoadBook:
    fleet = ReplicaSet()
    for replica in replicas:
        fleet.add(replica)
    return LoadBook(fleet, recent_routes=64)


def test_view_carries_load_and_live_hashes():
    replica = Replica("m-0", "m", "http://127.0.0.1:1", region="eu")
    b = book(replica)
    b.begin(replica, (), 300, 16)
    b.begin(replica, (), 0, 16)
    view = b.view(replica)
    assert (view.replica_id, view.model, view.outstanding_requests, view.outstanding_tokens, view.region) \
        == ("m-0", "m", 2, 300, "eu")
    replica.reported_hashes.add([h(7)])                 # reported by its worker after the view was taken
    b.begin(replica, (h(8),), 10, 16)                   # routed there after the view was taken
    assert h(7) in view.cached_block_hashes and h(8) in view.cached_block_hashes


def test_prefix_aware_sees_hashes_added_later():
    warm, cold = Replica("m-0", "m", "u0"), Replica("m-1", "m", "u1")
    b = book(warm, cold)
    views = [b.view(cold), b.view(warm)]
    warm.reported_hashes.add([h(1), h(2)])
    assert make_policy("prefix_aware").choose(RouteRequest("m", (h(1), h(2), h(3))), views).replica_id == "m-0"


def test_load_on_a_replica_leaves_out_the_prompt_blocks_it_holds():
    """A cache hit costs a replica its uncached tail and output, not the whole prompt (prefix_aware's guard)."""
    hashes = tuple(hash_token_blocks(list(range(100, 100 + 64)), 16))          # 4 full blocks
    warm, cold = Replica("m-0", "m", "http://a"), Replica("m-1", "m", "http://b")
    b = book(warm, cold)
    warm.reported_hashes.add(hashes[:3])
    leases = [b.begin(warm, hashes, 100, 16), b.begin(cold, hashes, 100, 16)]
    assert (b.load("m-0").outstanding_tokens, b.load("m-1").outstanding_tokens) == (100 - 48, 100)
    assert hashes[3] in b.cached_hashes(warm) and hashes[0] in b.cached_hashes(cold)   # recent routing is kept
    assert h(0) not in b.cached_hashes(cold)
    for lease in leases:
        b.end(lease)
    assert b.load("m-0").outstanding_tokens == b.load("m-1").outstanding_tokens == 0
    assert b.load("m-0").num_routed == b.load("m-1").num_routed == 1


def test_a_failed_replica_is_out_until_its_next_passing_probe():
    replica = Replica("m-0", "m", "u", state=ReplicaState.READY, probes_passed=5)
    b = book(replica)
    assert not b.is_out(replica)
    b.failed(replica)
    assert b.is_out(replica) and replica.state == ReplicaState.READY   # the book never changes the fleet
    replica.probes_passed += 1                          # the controller probed it since (or a mirror said so)
    assert not b.is_out(replica)


def test_entries_of_replicas_gone_from_the_fleet_are_dropped_once_idle():
    fleet = ReplicaSet()
    b = LoadBook(fleet, recent_routes=8)
    for i in range(40):
        replica = Replica(f"m-{i}", "m", "u")
        fleet.add(replica)
        b.end(b.begin(replica, (h(i),), 10, 16))
        fleet.remove(replica)
    busy = Replica("m-busy", "m", "u")
    b.begin(busy, (), 10, 16)                           # in flight: kept even though it left the fleet
    assert len(b) <= 2 * len(fleet.all()) + 17 and b.load("m-busy").outstanding_requests == 1
