"""The pure routing policies: round_robin, least_load, prefix_aware, session, and make_policy."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.router import ReplicaView, RouteRequest, make_policy
from infercloud.router.base import POLICY_NAMES
from infercloud.router.prefix_aware import match_length

MODEL = "m"
BS = 16


def replica(replica_id: str, tokens: int = 0, requests: int = 0, cached=()) -> ReplicaView:
    return ReplicaView(replica_id, MODEL, outstanding_requests=requests, outstanding_tokens=tokens,
                       cached_block_hashes=frozenset(cached))


def request(hashes=(), session_key: str | None = None) -> RouteRequest:
    return RouteRequest(MODEL, prompt_block_hashes=tuple(hashes), num_prompt_tokens=len(hashes) * BS,
                        session_key=session_key)


def policy(name: str, seed: int = 0, **options):
    return make_policy(name, random.Random(seed), **options)


def blocks(n: int, first_token: int = 0) -> list[bytes]:
    """Chained hashes of an n-block prompt; prompts with different `first_token` share no block."""
    return hash_token_blocks([first_token] + list(range(1, n * BS)), block_size=BS)


PROMPT = blocks(8)


def ids(chosen: list[ReplicaView]) -> Counter:
    return Counter(r.replica_id for r in chosen)


# --- all policies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", POLICY_NAMES)
def test_empty_replica_list_gives_none(name):
    assert policy(name).choose(request(PROMPT, session_key="s"), []) is None
    assert policy(name).choose(request(), []) is None


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_single_replica_is_chosen(name):
    only = replica("a", tokens=10**9, requests=100)
    for req in (request(), request(PROMPT), request(session_key="s")):
        assert policy(name).choose(req, [only]) is only


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_name(name):
    assert policy(name).name == name


def test_unknown_policy_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="no_such_policy"):
        make_policy("no_such_policy")


# --- round_robin ------------------------------------------------------------------------------------

def test_round_robin_spreads_evenly():
    rr, reps = policy("round_robin"), [replica("a"), replica("b"), replica("c")]
    assert ids([rr.choose(request(), reps) for _ in range(30)]) == {"a": 10, "b": 10, "c": 10}


def test_round_robin_order_is_by_replica_id_regardless_of_input_order():
    rr = policy("round_robin")
    shuffled = [[replica("c"), replica("a"), replica("b")], [replica("b"), replica("c"), replica("a")]]
    got = [rr.choose(request(), shuffled[k % 2]).replica_id for k in range(6)]
    assert got == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_ignores_load():
    rr, reps = policy("round_robin"), [replica("a", tokens=10**6), replica("b")]
    assert [rr.choose(request(), reps).replica_id for _ in range(4)] == ["a", "b", "a", "b"]


def test_round_robin_keeps_cycling_when_a_replica_leaves():
    rr, a, b, c = policy("round_robin"), replica("a"), replica("b"), replica("c")
    assert [rr.choose(request(), [a, b, c]).replica_id for _ in range(3)] == ["a", "b", "c"]
    after = [rr.choose(request(), [a, c]) for _ in range(10)]
    assert ids(after) == {"a": 5, "c": 5}
    assert all(x is not y for x, y in zip(after, after[1:]))  # strictly alternating


# --- least_load -------------------------------------------------------------------------------------

def test_least_load_of_two_picks_fewer_tokens():
    ll = policy("least_load")
    light, heavy = replica("light", tokens=100, requests=9), replica("heavy", tokens=101, requests=0)
    for reps in ([light, heavy], [heavy, light]):
        assert all(ll.choose(request(), reps) is light for _ in range(50))


def test_least_load_token_tie_broken_by_requests():
    ll = policy("least_load")
    few, many = replica("few", tokens=500, requests=1), replica("many", tokens=500, requests=2)
    for reps in ([few, many], [many, few]):
        assert all(ll.choose(request(), reps) is few for _ in range(50))


def test_least_load_full_tie_goes_to_either():
    ll, reps = policy("least_load"), [replica("a", tokens=5), replica("b", tokens=5)]
    counts = ids([ll.choose(request(), reps) for _ in range(200)])
    assert set(counts) == {"a", "b"}


def test_least_load_never_picks_the_most_loaded():
    ll = policy("least_load", seed=1)
    reps = [replica("a", tokens=100), replica("hot", tokens=100_000), replica("b", tokens=200), replica("c")]
    counts = ids([ll.choose(request(), reps) for _ in range(1000)])
    assert "hot" not in counts
    assert set(counts) == {"a", "b", "c"}
    # with two random choices the least loaded wins whenever drawn: 3 of the 6 pairs
    assert counts["c"] > counts["a"] > counts["b"]


def test_least_load_spreads_evenly_over_equal_replicas():
    ll, reps = policy("least_load", seed=2), [replica(x) for x in "abcd"]
    counts = ids([ll.choose(request(), reps) for _ in range(1000)])
    assert set(counts) == set("abcd")
    assert all(150 <= n <= 350 for n in counts.values()), counts


def test_least_load_is_deterministic_for_a_seed():
    reps = [replica(x) for x in "abcdef"]
    a, b = policy("least_load", seed=7), policy("least_load", seed=7)
    assert [a.choose(request(), reps) for _ in range(50)] == [b.choose(request(), reps) for _ in range(50)]


class FirstTwo(random.Random):
    """An rng whose two-replica draw is always the first two offered, in order."""

    def sample(self, population, k, **_):
        return list(population)[:k]


def test_least_load_full_tie_goes_to_the_first_drawn():
    ll = make_policy("least_load", FirstTwo())
    a, b = replica("a", tokens=5, requests=1), replica("b", tokens=5, requests=1)
    assert ll.choose(request(), [a, b]) is a
    assert ll.choose(request(), [b, a]) is b
    assert ll.choose(request(), [replica("x", tokens=6), b, a]) is b  # only the two drawn compete


# --- prefix_aware: match_length ---------------------------------------------------------------------

def test_block_hashes_are_chained_prefix_keys():
    assert len(PROMPT) == 8
    assert blocks(5) == PROMPT[:5]                       # a shorter prompt shares its prefix hashes
    assert set(blocks(8, first_token=99)).isdisjoint(PROMPT)  # one changed token changes every block
    assert len(hash_token_blocks(list(range(BS * 2 + 5)), block_size=BS)) == 2  # partial block not hashed


def test_match_length_counts_leading_hits():
    assert match_length(PROMPT, frozenset()) == 0
    assert match_length(PROMPT, frozenset(PROMPT)) == 8
    assert match_length(PROMPT, frozenset(PROMPT[:3])) == 3
    assert match_length(PROMPT[:3], frozenset(PROMPT)) == 3
    assert match_length((), frozenset(PROMPT)) == 0


def test_match_length_stops_at_first_miss():
    assert match_length(PROMPT, frozenset(PROMPT[:2] + PROMPT[3:])) == 2  # block 2 missing
    assert match_length(PROMPT, frozenset(PROMPT[1:])) == 0               # first block missing
    assert match_length(PROMPT, frozenset(blocks(8, first_token=99))) == 0


# --- prefix_aware: choice ---------------------------------------------------------------------------

def test_prefix_longest_match_wins_despite_more_load():
    pa = policy("prefix_aware")
    warm = replica("warm", tokens=3000, requests=5, cached=PROMPT[:6])
    lukewarm = replica("lukewarm", tokens=1000, cached=PROMPT[:2])
    cold = replica("cold", tokens=0)
    for reps in ([warm, lukewarm, cold], [cold, lukewarm, warm]):
        assert all(pa.choose(request(PROMPT), reps) is warm for _ in range(20))


def test_prefix_chain_semantics_in_choice():
    # "gappy" holds 7 of 8 blocks but misses block 1, so it matches only 1; "short" matches 3.
    pa = policy("prefix_aware")
    gappy = replica("gappy", cached=PROMPT[:1] + PROMPT[2:])
    short = replica("short", tokens=100, cached=PROMPT[:3])
    assert pa.choose(request(PROMPT), [gappy, short]) is short


def test_prefix_equal_matches_go_to_the_less_loaded():
    pa = policy("prefix_aware")
    busy = replica("busy", tokens=900, cached=PROMPT)
    idle = replica("idle", tokens=100, cached=PROMPT[:4])
    cold = replica("cold", tokens=0)
    for reps in ([busy, idle, cold], [idle, cold, busy]):
        assert pa.choose(request(PROMPT[:4]), reps) is idle


def test_prefix_equal_match_and_tokens_go_to_fewer_requests():
    pa = policy("prefix_aware")
    a = replica("a", tokens=100, requests=3, cached=PROMPT)
    b = replica("b", tokens=100, requests=1, cached=PROMPT)
    assert pa.choose(request(PROMPT), [a, b]) is b


def test_prefix_no_match_behaves_as_least_load():
    pa = policy("prefix_aware")
    other = blocks(8, first_token=99)
    light, heavy = replica("light", tokens=10, cached=other), replica("heavy", tokens=20, cached=other[:2])
    for reps in ([light, heavy], [heavy, light]):
        assert all(pa.choose(request(PROMPT), reps) is light for _ in range(20))
        assert all(pa.choose(request(()), reps) is light for _ in range(20))  # prompt shorter than a block


def test_prefix_no_match_never_picks_most_loaded():
    pa = policy("prefix_aware", seed=3)
    reps = [replica(x, tokens=i) for i, x in enumerate("abc")] + [replica("hot", tokens=10**6)]
    assert "hot" not in ids([pa.choose(request(PROMPT), reps) for _ in range(500)])


def pair(best_tokens: int, least_tokens: int):
    """The warm replica (full match) and the cold, least loaded one."""
    return replica("warm", tokens=best_tokens, cached=PROMPT), replica("cold", tokens=least_tokens)


# margin_tokens=1000, margin_ratio=2.0; the fallback needs excess > 1000 AND warm > 2 x cold.
@pytest.mark.parametrize("warm_tokens, cold_tokens, expected", [
    # token margin binds (ratio clearly exceeded): excess exactly 1000 stays, 1001 falls back
    (1100, 100, "warm"),
    (1101, 100, "cold"),
    # ratio binds (token margin clearly exceeded): exactly 2x stays, one more token falls back
    (10_000, 5_000, "warm"),
    (10_001, 5_000, "cold"),
    # only one of the two conditions holds: no fallback
    (1500, 900, "warm"),   # ratio 1.67 <= 2, excess 600 <= 1000
    (3000, 1999, "warm"),  # excess 1001 > 1000 but ratio 1.50 <= 2
    (900, 0, "warm"),      # ratio infinite but excess 900 <= 1000
    (1001, 0, "cold"),     # both just over, from an idle cold replica
    # warm is also the least loaded
    (0, 0, "warm"),
    (5, 10_000, "warm"),
])
def test_prefix_load_margins(warm_tokens, cold_tokens, expected):
    pa = policy("prefix_aware", margin_tokens=1000, margin_ratio=2.0)
    warm, cold = pair(warm_tokens, cold_tokens)
    for reps in ([warm, cold], [cold, warm]):
        assert pa.choose(request(PROMPT), reps).replica_id == expected


@pytest.mark.parametrize("warm_tokens, cold_tokens, expected", [
    (5096, 1000, "warm"),     # excess == 4096
    (5097, 1000, "cold"),     # excess 4097, ratio 5.1
    (15_000, 10_000, "warm"),  # ratio == 1.5
    (15_001, 10_000, "cold"),
])
def test_prefix_default_margins_are_4096_tokens_and_1_5x(warm_tokens, cold_tokens, expected):
    pa = policy("prefix_aware")
    assert (pa.margin_tokens, pa.margin_ratio) == (4096, 1.5)
    warm, cold = pair(warm_tokens, cold_tokens)
    assert pa.choose(request(PROMPT), [warm, cold]).replica_id == expected


def test_prefix_margin_compares_against_least_loaded_of_all_replicas():
    # the best match is compared with the least loaded replica overall, not with the runner-up match
    pa = policy("prefix_aware", margin_tokens=1000, margin_ratio=2.0)
    warm = replica("warm", tokens=3000, cached=PROMPT)
    runner_up = replica("runner_up", tokens=2500, cached=PROMPT[:7])
    idle = replica("idle", tokens=0)
    assert pa.choose(request(PROMPT), [warm, runner_up]) is warm
    # with three replicas the fallback is a random pair, which never picks the most loaded ("warm")
    assert all(pa.choose(request(PROMPT), [warm, runner_up, idle]) is not warm for _ in range(50))


# --- session ----------------------------------------------------------------------------------------

FOUR = [replica(x) for x in ("r0", "r1", "r2", "r3")]
KEYS = [f"user-{i}" for i in range(200)]


def test_session_same_key_same_replica():
    s = policy("session")
    chosen = {s.choose(request(session_key="alice"), FOUR).replica_id for _ in range(100)}
    assert len(chosen) == 1


def test_session_ignores_input_order_load_and_seed():
    a, b = policy("session", seed=1), policy("session", seed=2)
    loaded = [replica(r.replica_id, tokens=10**6 * i) for i, r in enumerate(reversed(FOUR))]
    for key in KEYS[:50]:
        assert a.choose(request(session_key=key), FOUR).replica_id == \
            b.choose(request(session_key=key), loaded).replica_id


def test_session_keys_spread_over_replicas():
    s = policy("session")
    counts = ids([s.choose(request(session_key=k), FOUR) for k in KEYS])
    assert set(counts) == {"r0", "r1", "r2", "r3"}
    assert all(20 <= n <= 80 for n in counts.values()), counts


def test_session_removing_a_replica_moves_only_its_keys():
    s = policy("session")
    before = {k: s.choose(request(session_key=k), FOUR).replica_id for k in KEYS}
    after = {k: s.choose(request(session_key=k), FOUR[:2] + FOUR[3:]).replica_id for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "r2"}
    assert moved and "r2" not in after.values()


def test_session_adding_a_replica_moves_keys_only_to_it():
    s = policy("session")
    before = {k: s.choose(request(session_key=k), FOUR).replica_id for k in KEYS}
    after = {k: s.choose(request(session_key=k), FOUR + [replica("r4")]).replica_id for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved and all(after[k] == "r4" for k in moved)


def test_session_without_key_behaves_as_least_load():
    s = policy("session")
    light, heavy = replica("light", tokens=10), replica("heavy", tokens=20)
    for reps in ([light, heavy], [heavy, light]):
        assert all(s.choose(request(), reps) is light for _ in range(50))
    hot = [replica(x) for x in "abc"] + [replica("hot", tokens=10**6)]
    assert "hot" not in ids([s.choose(request(), hot) for _ in range(500)])
