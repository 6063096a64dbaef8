"""KnownHashes (bounded LRU), Replica and the ReplicaSet: membership, state, and mirroring the controller's records."""

from __future__ import annotations

import pytest

from infercloud.contracts import ModelState, ReplicaRecord
from infercloud.fleet.replicas import KnownHashes, Replica, ReplicaSet, ReplicaState


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

def test_only_ready_is_ready():
    replica = Replica("m-0", "m", "u")
    assert replica.state == ReplicaState.STARTING
    assert [s for s in ReplicaState if Replica("x", "m", "u", state=s).is_ready] == [ReplicaState.READY]


def test_a_report_of_its_engine_adds_the_cached_prefix_hashes():
    replica = Replica("m-0", "m", "u")
    replica.observe(ModelState(running=2, recent_prefix_block_hashes=(h(1).hex(), h(2).hex())))
    replica.observe(ModelState(running=1, recent_prefix_block_hashes=(h(3).hex(),)))
    assert replica.engine.running == 1
    assert all(h(i) in replica.reported_hashes for i in (1, 2, 3))   # remembered across reports (LRU)
    replica.observe(None)
    assert replica.engine is None and h(1) in replica.reported_hashes


def test_replicas_have_their_own_reported_hashes():
    a, b = Replica("m-0", "m", "u0"), Replica("m-1", "m", "u1")
    a.reported_hashes.add([h(1)])
    assert h(1) not in b.reported_hashes


def test_a_record_round_trips():
    replica = Replica("m-0", "m", "http://w", state=ReplicaState.READY, region="eu", wanted_region="us",
                      probes_passed=4)
    replica.observe(ModelState(max_model_len=2048))
    copy = Replica.mirror(ReplicaRecord.model_validate_json(replica.record().model_dump_json()))
    assert (copy.replica_id, copy.url, copy.state, copy.region, copy.wanted_region, copy.probes_passed,
            copy.engine.max_model_len) == ("m-0", "http://w", ReplicaState.READY, "eu", "us", 4, 2048)


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
    replicas.remove(by_state[ReplicaState.READY])       # already gone: nothing happens
    assert replicas.routable("m") == []
    assert by_state[ReplicaState.READY] not in replicas.of("m")
    replicas.of("m").clear()                            # of() is a copy
    assert len(replicas.of("m")) == len(ReplicaState) - 1


def test_replica_seconds_count_the_time_in_the_set():
    now = [0.0]
    replicas = ReplicaSet(lambda: now[0])
    a, b = Replica("m-0", "m", "u"), Replica("m-1", "m", "u")
    replicas.add(a)
    now[0] = 10.0
    replicas.add(b)
    now[0] = 15.0
    replicas.remove(a)
    now[0] = 20.0
    assert replicas.replica_seconds() == {"m": 15.0 + 10.0}


def record(replica_id: str, state: str = "ready", url: str = "http://w", region: str | None = None,
           probes_passed: int = 1) -> ReplicaRecord:
    return ReplicaRecord(replica_id=replica_id, model="m", url=url, state=state, region=region,
                         probes_passed=probes_passed, engine=ModelState(max_model_len=2048))


def test_mirror_adds_updates_in_place_and_removes():
    replicas = ReplicaSet()
    replicas.mirror([record("m-0"), record("m-1", "starting")])
    first = replicas.of("m")[0]
    replicas.mirror([record("m-0", url="http://moved", region="eu", probes_passed=2), record("m-1")])
    assert replicas.of("m")[0] is first                 # the same object: whatever keys on it carries on
    assert (first.url, first.region, first.probes_passed, first.engine.max_model_len) == \
        ("http://moved", "eu", 2, 2048)
    assert [r.state for r in replicas.of("m")] == [ReplicaState.READY, ReplicaState.READY]
    replicas.mirror([record("m-1")])
    assert [r.replica_id for r in replicas.all()] == ["m-1"]


@pytest.mark.parametrize("state", list(ReplicaState))
def test_mirror_takes_every_state(state):
    replicas = ReplicaSet()
    replicas.mirror([record("m-0", state.value)])
    assert replicas.of("m")[0].state == state
