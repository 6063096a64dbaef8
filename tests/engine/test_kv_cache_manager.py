"""KVCacheManager and BlockPool: exact block ids, LRU eviction order, prefix hits, salts, accounting."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.engine.kv.kv_cache_manager import KVCacheManager
from infercloud.engine.request import Request
from tests.engine.factories import make_request

BS = 4


def prefill(kv: KVCacheManager, req: Request) -> list[int]:
    """Admit `req` the way the scheduler does (cached prefix, then the rest in one chunk), compute it all."""
    hits = kv.get_computed_blocks(req)
    num_hit = len(hits) * BS
    assert kv.allocate_slots(req, req.num_tokens - num_hit, hits) is not None
    kv.record_prefix_lookup(req, num_hit)
    req.num_computed_tokens = req.num_tokens
    kv.cache_full_blocks(req, req.num_tokens)
    return kv.block_ids(req)


def take_blocks(kv: KVCacheManager, request_id: str, num_blocks: int) -> list[int]:
    """Allocate `num_blocks` fresh blocks to a request that shares nothing with anyone."""
    req = make_request(request_id, num_blocks * BS)
    assert kv.allocate_slots(req, req.num_tokens) is not None
    return kv.block_ids(req)


def ref_counts(kv: KVCacheManager, block_ids: list[int]) -> list[int]:
    return [kv.pool.blocks[i].ref_cnt for i in block_ids]


# -- allocation ----------------------------------------------------------------------------------------

def test_fresh_pool_hands_out_block_ids_in_order():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    r1, r2 = make_request("r1", 10), make_request("r2", 5)
    assert [b.block_id for b in kv.allocate_slots(r1, 10)] == [0, 1, 2]
    assert [b.block_id for b in kv.allocate_slots(r2, 5)] == [3, 4]
    assert kv.block_ids(r1) == [0, 1, 2] and kv.block_ids(r2) == [3, 4]
    assert kv.num_free_blocks == 5 and kv.num_used_blocks == 5
    assert ref_counts(kv, [0, 1, 2, 3, 4]) == [1] * 5


def test_allocate_adds_a_block_only_when_a_block_boundary_is_crossed():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    req = make_request("r", 3)
    assert [b.block_id for b in kv.allocate_slots(req, 3)] == [0]
    req.num_computed_tokens = 3
    req.append_token(7)
    assert kv.allocate_slots(req, 1) == []  # token 4 still fits block 0
    req.num_computed_tokens = 4
    req.append_token(8)
    assert [b.block_id for b in kv.allocate_slots(req, 1)] == [1]
    assert kv.block_ids(req) == [0, 1]


def test_allocate_returns_none_when_pool_is_short_and_changes_nothing():
    kv = KVCacheManager(num_blocks=3, block_size=BS)
    take_blocks(kv, "a", 2)
    req = make_request("r", 8)
    assert kv.allocate_slots(req, 8) is None
    assert kv.block_ids(req) == [] and kv.num_free_blocks == 1


# -- freeing and eviction order ------------------------------------------------------------------------

def test_free_returns_all_blocks_and_is_idempotent():
    kv = KVCacheManager(num_blocks=6, block_size=BS)
    req = make_request("r", 10)
    prefill(kv, req)
    kv.free(req)
    kv.free(req)
    assert kv.num_free_blocks == 6 and kv.block_ids(req) == []
    assert all(b.ref_cnt == 0 for b in kv.pool.blocks)


def test_freed_blocks_are_evicted_lru_with_a_sequences_last_block_first():
    kv = KVCacheManager(num_blocks=6, block_size=BS)
    r1, r2 = make_request("r1", 12), make_request("r2", 8)
    assert prefill(kv, r1) == [0, 1, 2]
    assert prefill(kv, r2) == [3, 4]
    kv.free(r1)
    kv.free(r2)
    # queue: never used (5), then r1 tail first (2, 1, 0), then r2 tail first (4, 3)
    assert [take_blocks(kv, f"n{i}", 1) for i in range(6)] == [[5], [2], [1], [0], [4], [3]]
    assert kv.pool.num_evictions == 5


def test_eviction_of_a_tail_block_keeps_the_prefix_hittable():
    kv = KVCacheManager(num_blocks=3, block_size=BS)
    first = make_request("first", 8)
    assert prefill(kv, first) == [0, 1]
    kv.free(first)  # queue: 2, 1, 0
    assert take_blocks(kv, "x", 1) == [2]
    assert take_blocks(kv, "y", 1) == [1]  # evicts first's second block
    again = make_request("again", first.prompt_token_ids + [5])
    assert [b.block_id for b in kv.get_computed_blocks(again)] == [0]


def test_evicting_a_cached_block_removes_it_from_the_hash_map():
    kv = KVCacheManager(num_blocks=2, block_size=BS)
    first = make_request("first", 8)
    prefill(kv, first)
    hashes = list(first.block_hashes)
    assert [kv.pool.lookup(h).block_id for h in hashes] == [0, 1]
    kv.free(first)
    assert take_blocks(kv, "other", 2) == [1, 0]
    assert [kv.pool.lookup(h) for h in hashes] == [None, None]
    assert all(b.block_hash is None for b in kv.pool.blocks)
    assert kv.get_computed_blocks(make_request("again", first.prompt_token_ids + [5])) == []


def test_uncached_partial_block_carries_no_hash_after_free():
    kv = KVCacheManager(num_blocks=4, block_size=BS)
    req = make_request("r", 6)
    prefill(kv, req)
    kv.free(req)
    assert kv.pool.blocks[0].block_hash is not None
    assert kv.pool.blocks[1].block_hash is None


# -- prefix hits ---------------------------------------------------------------------------------------

def test_same_prefix_hits_the_cached_blocks():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    first = make_request("first", 10)
    assert prefill(kv, first) == [0, 1, 2]
    second = make_request("second", first.prompt_token_ids[:8] + [1, 2, 3, 4])
    hits = kv.get_computed_blocks(second)
    assert [b.block_id for b in hits] == [0, 1]
    assert [b.block_id for b in kv.allocate_slots(second, 4, hits)] == [3]
    assert kv.block_ids(second) == [0, 1, 3]
    assert ref_counts(kv, [0, 1, 2, 3]) == [2, 2, 1, 1]


def test_hit_counters_record_queried_and_hit_tokens():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    first = make_request("first", 10)
    prefill(kv, first)
    assert (kv.stats.queried_tokens, kv.stats.hit_tokens) == (10, 0)
    prefill(kv, make_request("second", first.prompt_token_ids[:8] + [1, 2, 3, 4]))
    assert (kv.stats.queried_tokens, kv.stats.hit_tokens) == (22, 8)
    assert kv.stats.hit_rate == pytest.approx(8 / 22)


def test_full_match_never_hits_the_block_of_the_last_token():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    first = make_request("first", 12)
    assert prefill(kv, first) == [0, 1, 2]
    same = make_request("same", first.prompt_token_ids)
    assert [b.block_id for b in kv.get_computed_blocks(same)] == [0, 1]
    longer = make_request("longer", first.prompt_token_ids + [9])
    assert [b.block_id for b in kv.get_computed_blocks(longer)] == [0, 1, 2]
    assert kv.get_computed_blocks(make_request("short", first.prompt_token_ids[:4])) == []


def test_hit_stops_at_the_first_missing_block():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    first = make_request("first", 12)
    prefill(kv, first)
    diverged = make_request("d", first.prompt_token_ids[:4] + [0, 0, 0, 0] + first.prompt_token_ids[8:] + [1])
    assert [b.block_id for b in kv.get_computed_blocks(diverged)] == [0]


def test_cache_salt_isolates_prefixes():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    tokens = list(range(100, 109))
    prefill(kv, make_request("a1", tokens, cache_salt="a"))
    assert kv.get_computed_blocks(make_request("b", tokens, cache_salt="b")) == []
    assert kv.get_computed_blocks(make_request("none", tokens)) == []
    assert [b.block_id for b in kv.get_computed_blocks(make_request("a2", tokens, cache_salt="a"))] == [0, 1]


def test_generated_tokens_fill_blocks_that_become_hittable():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    req = make_request("r", 6)
    prefill(kv, req)
    req.append_token(1)
    req.append_token(2)  # tokens 6, 7 fill block 1 once computed
    assert kv.allocate_slots(req, 2) == []
    req.num_computed_tokens = 8
    kv.cache_full_blocks(req, 8)
    follower = make_request("f", req.all_token_ids + [3])
    assert [b.block_id for b in kv.get_computed_blocks(follower)] == [0, 1]


def test_cache_full_blocks_registers_only_computed_full_blocks():
    kv = KVCacheManager(num_blocks=10, block_size=BS)
    req = make_request("r", 10)
    kv.allocate_slots(req, 10)
    kv.cache_full_blocks(req, 6)
    hashes = hash_token_blocks(req.all_token_ids, BS)
    assert kv.pool.lookup(hashes[0]).block_id == 0 and kv.pool.lookup(hashes[1]) is None
    kv.cache_full_blocks(req, 10)
    assert kv.pool.lookup(hashes[1]).block_id == 1
    assert kv.pool.blocks[2].block_hash is None


def test_duplicate_blocks_first_writer_wins_and_both_free_cleanly():
    kv = KVCacheManager(num_blocks=6, block_size=BS)
    tokens = list(range(50, 59))
    r1, r2 = make_request("r1", tokens), make_request("r2", tokens)
    kv.allocate_slots(r1, 9)
    kv.allocate_slots(r2, 9)  # neither is cached yet: no hit, own blocks
    for r in (r1, r2):
        r.num_computed_tokens = 9
        kv.cache_full_blocks(r, 9)
    assert kv.block_ids(r1) == [0, 1, 2] and kv.block_ids(r2) == [3, 4, 5]
    assert [kv.pool.lookup(h).block_id for h in r1.block_hashes] == [0, 1]
    kv.free(r1)
    kv.free(r2)
    assert kv.num_free_blocks == 6
    assert [b.block_id for b in kv.get_computed_blocks(make_request("r3", tokens))] == [0, 1]


def test_one_holder_freeing_a_shared_block_keeps_it_in_use():
    kv = KVCacheManager(num_blocks=6, block_size=BS)
    first = make_request("first", 9)
    prefill(kv, first)
    second = make_request("second", first.prompt_token_ids[:8] + [1])
    assert prefill(kv, second) == [0, 1, 3]
    kv.free(first)
    assert ref_counts(kv, [0, 1, 2, 3]) == [1, 1, 0, 1]
    assert kv.num_free_blocks == 3  # 2, 4, 5
    assert take_blocks(kv, "x", 3) == [4, 5, 2]


def test_hit_on_free_cached_blocks_takes_them_out_of_the_free_queue():
    kv = KVCacheManager(num_blocks=6, block_size=BS)
    first = make_request("first", 12)
    prefill(kv, first)
    kv.free(first)
    assert kv.num_free_blocks == 6
    second = make_request("second", first.prompt_token_ids + [1, 2])
    assert prefill(kv, second) == [0, 1, 2, 3]
    assert kv.num_free_blocks == 2 and kv.num_used_blocks == 4
    assert ref_counts(kv, [0, 1, 2, 3]) == [1, 1, 1, 1]
    assert take_blocks(kv, "x", 2) == [4, 5]  # the hit blocks are not handed out again
    assert kv.num_free_blocks == 0


def test_touching_a_free_cached_block_refreshes_its_lru_position():
    kv = KVCacheManager(num_blocks=3, block_size=BS)
    a, b = make_request("a", 4), make_request("b", 4)
    prefill(kv, a)
    prefill(kv, b)
    kv.free(a)
    kv.free(b)  # queue: 2, 0 (a), 1 (b)
    a2 = make_request("a2", a.prompt_token_ids + [1])
    assert prefill(kv, a2) == [0, 2]
    kv.free(a2)  # queue: 1 (b), 2, 0 (a, now most recent)
    assert take_blocks(kv, "x", 1) == [1]
    assert [b.block_id for b in kv.get_computed_blocks(make_request("a3", a.prompt_token_ids + [1]))] == [0]


def test_allocation_counts_evictable_hits_as_unavailable():
    kv = KVCacheManager(num_blocks=4, block_size=BS)
    first = make_request("first", 12)
    prefill(kv, first)
    kv.free(first)  # all 4 free, 3 of them cached
    too_big = make_request("big", first.prompt_token_ids + [1] * 8)  # 5 blocks: 3 hits + 2 new
    hits = kv.get_computed_blocks(too_big)
    assert len(hits) == 3
    assert kv.allocate_slots(too_big, 8, hits) is None
    assert kv.num_free_blocks == 4 and ref_counts(kv, [0, 1, 2, 3]) == [0, 0, 0, 0]
    assert [kv.pool.lookup(h).block_id for h in first.block_hashes] == [0, 1, 2]
    fits = make_request("fits", first.prompt_token_ids + [1] * 4)  # 4 blocks: 3 hits + 1 new
    assert prefill(kv, fits) == [0, 1, 2, 3]
    assert kv.num_free_blocks == 0


def test_prefix_caching_disabled_never_hits():
    kv = KVCacheManager(num_blocks=6, block_size=BS, enable_prefix_caching=False)
    first = make_request("first", 9)
    assert prefill(kv, first) == [0, 1, 2]
    kv.free(first)
    second = make_request("second", first.prompt_token_ids + [1])
    assert kv.get_computed_blocks(second) == []
    assert all(b.block_hash is None for b in kv.pool.blocks)
    assert prefill(kv, second) == [3, 4, 5]
    assert kv.stats.hit_tokens == 0


def test_reset_prefix_cache_forgets_free_cached_blocks():
    kv = KVCacheManager(num_blocks=6, block_size=BS)
    first = make_request("first", 9)
    prefill(kv, first)
    kv.free(first)
    kv.reset_prefix_cache()
    assert kv.get_computed_blocks(make_request("again", first.prompt_token_ids)) == []
    assert kv.num_free_blocks == 6


# -- randomized invariants -----------------------------------------------------------------------------

class _Sim:
    """Drives a KVCacheManager like a scheduler would, and models what each block's KV was computed from."""

    def __init__(self, seed: int, num_blocks: int = 16):
        self.rng = random.Random(seed)
        self.kv = KVCacheManager(num_blocks=num_blocks, block_size=BS)
        self.live: dict[str, tuple[Request, int]] = {}  # request id -> (request, tokens allocated not computed)
        self.context: dict[int, tuple] = {}  # full block id -> (salt, every token its KV depends on)
        self.prefixes = [[self.rng.randrange(100) for _ in range(n)] for n in (4, 9, 12)]
        self.next_id = 0
        self.num_hit_blocks = 0

    def new_request(self) -> Request:
        tokens = list(self.rng.choice(self.prefixes)) + [self.rng.randrange(3) for _ in range(self.rng.randrange(8))]
        self.next_id += 1
        return make_request(f"r{self.next_id}", tokens, cache_salt=self.rng.choice([None, None, "t"]))

    def admit(self) -> None:
        req = self.new_request()
        hits = self.kv.get_computed_blocks(req)
        for i, block in enumerate(hits):
            assert self.context[block.block_id] == (req.cache_salt, tuple(req.all_token_ids[:(i + 1) * BS]))
        self.num_hit_blocks += len(hits)
        num_hit = len(hits) * BS
        chunk = self.rng.randint(1, req.num_tokens - num_hit)
        free_before = self.kv.num_free_blocks
        if self.kv.allocate_slots(req, chunk, hits) is None:
            assert self.kv.num_free_blocks == free_before and self.kv.block_ids(req) == []
            return
        req.num_computed_tokens = num_hit
        self.live[req.request_id] = (req, chunk)

    def compute(self) -> None:
        req, pending = self.live[self.rng.choice(sorted(self.live))]
        blocks = self.kv.block_ids(req)
        for pos in range(req.num_computed_tokens, req.num_computed_tokens + pending):
            block = self.kv.pool.blocks[blocks[pos // BS]]
            assert block.ref_cnt == 1 and block.block_hash is None, "writing into a shared or cached block"
            if pos % BS == BS - 1:
                self.context[block.block_id] = (req.cache_salt, tuple(req.all_token_ids[:pos + 1]))
        req.num_computed_tokens += pending
        self.kv.cache_full_blocks(req, req.num_computed_tokens)
        if req.num_computed_tokens == req.num_tokens:
            req.append_token(self.rng.randrange(3))
        chunk = self.rng.randint(1, req.num_tokens - req.num_computed_tokens)
        if req.num_tokens > 30 or self.kv.allocate_slots(req, chunk) is None:
            self.free(req)  # finished, or preempted
        else:
            self.live[req.request_id] = (req, chunk)

    def free(self, req: Request) -> None:
        self.kv.free(req)
        del self.live[req.request_id]
        if self.rng.random() < 0.1:
            self.kv.free(req)  # a second free must be a no-op

    def step(self) -> None:
        op = self.rng.random()
        if not self.live or op < 0.35:
            self.admit()
        elif op < 0.85:
            self.compute()
        else:
            self.free(self.live[self.rng.choice(sorted(self.live))][0])

    def check(self) -> None:
        kv, pool = self.kv, self.kv.pool
        holders: Counter[int] = Counter()
        for req, pending in self.live.values():
            ids = kv.block_ids(req)
            assert len(ids) == len(set(ids))
            assert len(ids) == -(-(req.num_computed_tokens + pending) // BS)
            holders.update(ids)
        assert kv.num_free_blocks + kv.num_used_blocks == pool.num_blocks
        assert kv.num_free_blocks == sum(1 for b in pool.blocks if b.ref_cnt == 0)
        assert set(pool._free) == {b.block_id for b in pool.blocks if b.ref_cnt == 0}
        for block in pool.blocks:
            assert block.ref_cnt >= 0
            assert block.ref_cnt == holders[block.block_id]
            if block.ref_cnt > 1:  # shared: only cached prefix blocks are
                assert block.block_hash is not None and pool.lookup(block.block_hash) is block
        for block_hash, block in pool._cached.items():
            assert block.block_hash == block_hash


@pytest.mark.parametrize("seed", range(5))
def test_random_operations_keep_pool_invariants(seed):
    sim = _Sim(seed)
    for _ in range(400):
        sim.step()
        sim.check()
    assert sim.num_hit_blocks > 0  # the shared prefixes did get hit
    for req, _ in list(sim.live.values()):
        sim.free(req)
    sim.check()
    assert sim.kv.num_free_blocks == sim.kv.pool.num_blocks
