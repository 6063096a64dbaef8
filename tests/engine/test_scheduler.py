"""Scheduler: decode-first batching, chunked prefill, seq caps, priorities, preemption by recompute."""

from __future__ import annotations

import random

from infercloud.engine.kv.kv_cache_manager import KVCacheManager
from infercloud.engine.request import FinishReason, Request, RequestStatus
from infercloud.engine.scheduler import Scheduler, SchedulerOutput
from tests.engine.factories import make_request

BS = 4


def make_scheduler(num_blocks: int = 16, max_num_seqs: int = 8, max_num_batched_tokens: int = 16,
                   enable_prefix_caching: bool = True) -> Scheduler:
    kv = KVCacheManager(num_blocks, BS, enable_prefix_caching)
    return Scheduler(kv, max_num_seqs, max_num_batched_tokens, clock=lambda: 0.0)


def step(sched: Scheduler, token_id: int = 1) -> SchedulerOutput:
    """One engine step without a model: schedule, advance, sample `token_id` where a chunk ends, stop at max_tokens."""
    out = sched.schedule()
    assert out.num_batched_tokens <= sched.max_num_batched_tokens
    assert len(sched.running) <= sched.max_num_seqs
    sampled = [s.request for s in out.scheduled if s.samples]  # before update: samples reads num_computed_tokens
    sched.update_after_step(out)
    for req in sampled:
        req.append_token(token_id)
        if req.num_output_tokens >= req.params.max_tokens:
            sched.finish(req, FinishReason.LENGTH)
    return out


def chunks(out: SchedulerOutput) -> list[tuple[str, int]]:
    return [(s.request.request_id, s.num_new_tokens) for s in out.scheduled]


def ids(reqs: list[Request]) -> list[str]:
    return [r.request_id for r in reqs]


def add(sched: Scheduler, *reqs: Request) -> None:
    for req in reqs:
        sched.add(req)


# -- prefill, decode, chunking -------------------------------------------------------------------------

def test_short_prompt_prefills_in_one_step_then_decodes_one_token_a_step():
    sched = make_scheduler()
    req = make_request("r", 6, max_tokens=3)
    add(sched, req)
    out = step(sched)
    assert chunks(out) == [("r", 6)] and out.scheduled[0].block_ids == [0, 1]
    assert chunks(step(sched)) == [("r", 1)]
    out = step(sched)
    assert chunks(out) == [("r", 1)] and out.scheduled[0].block_ids == [0, 1]
    assert req.is_finished and req.finish_reason == FinishReason.LENGTH
    assert not sched.has_unfinished() and sched.kv.num_free_blocks == 16


def test_long_prompt_is_split_into_budget_sized_chunks():
    sched = make_scheduler(max_num_batched_tokens=8)
    req = make_request("r", 20)
    add(sched, req)
    outs = [step(sched) for _ in range(4)]
    assert [chunks(o) for o in outs] == [[("r", 8)], [("r", 8)], [("r", 4)], [("r", 1)]]
    assert [o.scheduled[0].block_ids for o in outs] == [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5]]
    assert req.num_output_tokens == 2  # sampled only after the last chunk, then after the decode


def test_only_the_chunk_reaching_the_last_token_samples():
    sched = make_scheduler(max_num_batched_tokens=8)
    add(sched, make_request("r", 12))
    first = sched.schedule()
    assert [s.samples for s in first.scheduled] == [False]
    sched.update_after_step(first)
    second = sched.schedule()
    assert [s.samples for s in second.scheduled] == [True]


def test_decodes_come_before_prefill_chunks_and_share_the_budget():
    sched = make_scheduler(max_num_batched_tokens=8)
    add(sched, make_request("a", 3, arrival_time=0), make_request("b", 20, arrival_time=1),
        make_request("c", 2, arrival_time=2))
    assert chunks(step(sched)) == [("a", 3), ("b", 5)]
    assert chunks(step(sched)) == [("a", 1), ("b", 7)]
    assert chunks(step(sched)) == [("a", 1), ("b", 7)]
    assert chunks(step(sched)) == [("a", 1), ("b", 1), ("c", 2)]


def test_decode_comes_before_an_older_request_still_in_prefill():
    sched = make_scheduler(max_num_batched_tokens=8)
    add(sched, make_request("young", 3, arrival_time=1))
    step(sched)
    add(sched, make_request("old", 20, arrival_time=0))  # e.g. re-queued with its original arrival time
    assert chunks(step(sched)) == [("young", 1), ("old", 7)]
    assert chunks(step(sched)) == [("young", 1), ("old", 7)]


def test_budget_exhausted_by_decodes_admits_no_prefill():
    sched = make_scheduler(max_num_batched_tokens=2)
    add(sched, make_request("a", 2, arrival_time=0), make_request("b", 2, arrival_time=1))
    assert chunks(step(sched)) == [("a", 2)]
    assert chunks(step(sched)) == [("a", 1), ("b", 1)]
    add(sched, make_request("c", 1, arrival_time=2))
    assert chunks(step(sched)) == [("a", 1), ("b", 1)]
    assert ids(sched.waiting) == ["c"]


def test_waiting_request_chunk_uses_only_the_budget_left():
    sched = make_scheduler(max_num_batched_tokens=10)
    add(sched, make_request("a", 7, arrival_time=0), make_request("b", 12, arrival_time=1))
    assert chunks(step(sched)) == [("a", 7), ("b", 3)]
    assert chunks(step(sched)) == [("a", 1), ("b", 9)]


def test_max_num_seqs_caps_running_requests():
    sched = make_scheduler(max_num_seqs=2, max_num_batched_tokens=64)
    add(sched, *(make_request(n, 3, max_tokens=2, arrival_time=i) for i, n in enumerate("abcd")))
    assert chunks(step(sched)) == [("a", 3), ("b", 3)]
    assert ids(sched.running) == ["a", "b"] and ids(sched.waiting) == ["c", "d"]
    assert chunks(step(sched)) == [("a", 1), ("b", 1)]  # both finish here
    assert chunks(step(sched)) == [("c", 3), ("d", 3)]


# -- priorities (vLLM's convention: lower is served first) ----------------------------------------------------------------------------------------

def test_higher_priority_is_admitted_first_then_fcfs_within_a_class():
    sched = make_scheduler(max_num_seqs=3, max_num_batched_tokens=64)
    add(sched, make_request("low1", 3, arrival_time=0), make_request("high1", 3, priority=-1, arrival_time=1),
        make_request("low2", 3, arrival_time=2), make_request("high2", 3, priority=-1, arrival_time=3))
    assert ids(sched.waiting) == ["high1", "high2", "low1", "low2"]
    assert chunks(step(sched)) == [("high1", 3), ("high2", 3)]   # a lower class's prompt waits a step
    assert chunks(step(sched)) == [("high1", 1), ("high2", 1), ("low1", 3)]
    assert ids(sched.waiting) == ["low2"]


def test_a_lower_class_prompt_never_shares_a_step_with_a_higher_class_prompt():
    """Batch work (an evaluation's judge) and an interactive first token: the judge's prefill is held, its
    decodes are not."""
    sched = make_scheduler(max_num_batched_tokens=8, num_blocks=32)
    add(sched, make_request("judge_decoding", 3, priority=2, arrival_time=0),
        make_request("judge_long", 20, priority=2, arrival_time=1))
    assert chunks(step(sched)) == [("judge_decoding", 3), ("judge_long", 5)]
    add(sched, make_request("user", 6, priority=0, arrival_time=2))
    assert chunks(step(sched)) == [("judge_decoding", 1), ("user", 6)]   # judge_long's prompt is held
    assert chunks(step(sched)) == [("user", 1), ("judge_decoding", 1), ("judge_long", 6)]


def test_a_held_prompt_goes_on_when_the_higher_class_cannot_get_blocks():
    sched = make_scheduler(max_num_batched_tokens=12, num_blocks=4)
    add(sched, make_request("batch", 14, priority=2, arrival_time=0))
    assert chunks(step(sched)) == [("batch", 12)]
    add(sched, make_request("user", 8, priority=0, arrival_time=1))   # needs 2 blocks: 1 is free
    assert chunks(step(sched)) == [("batch", 2)]                       # not deadlocked behind it
    assert ids(sched.waiting) == ["user"]


def test_earliest_due_is_admitted_first_within_a_class_but_never_above_a_higher_one():
    """A pipeline's request late in its budget (due soon) goes before a fresh one with slack."""
    sched = make_scheduler(max_num_seqs=2, max_num_batched_tokens=64)
    add(sched, make_request("fresh", 3, arrival_time=0, due_time=2.0),
        make_request("late_in_pipeline", 3, arrival_time=1, due_time=1.2),
        make_request("high", 3, priority=-1, arrival_time=2, due_time=4.0))
    assert ids(sched.waiting) == ["high", "late_in_pipeline", "fresh"]
    assert chunks(step(sched)) == [("high", 3)]
    assert chunks(step(sched)) == [("high", 1), ("late_in_pipeline", 3)]


def test_the_request_due_last_gives_up_its_blocks_first():
    sched = make_scheduler(num_blocks=3, max_num_batched_tokens=64)
    add(sched, make_request("due_late", 4, max_tokens=8, arrival_time=0, due_time=9.0),
        make_request("due_soon", 4, max_tokens=8, arrival_time=1, due_time=1.5))
    assert chunks(step(sched)) == [("due_soon", 4), ("due_late", 4)]
    out = step(sched)   # each needs a second block for its fifth token: 4 blocks of 3
    assert ids(out.preempted) == ["due_late"] and chunks(out) == [("due_soon", 1)]


def test_higher_priority_running_request_is_scheduled_first():
    sched = make_scheduler(max_num_batched_tokens=4)
    add(sched, make_request("low", 3, arrival_time=0))
    step(sched)
    add(sched, make_request("high", 8, priority=-1, arrival_time=1))
    assert chunks(step(sched)) == [("low", 1), ("high", 3)]
    assert chunks(step(sched)) == [("high", 4)]  # a high prefill outranks a low decode


def test_higher_priority_request_takes_the_slot_of_the_lowest_newest_running_one():
    sched = make_scheduler(max_num_seqs=2, max_num_batched_tokens=64)
    add(sched, make_request("low_old", 3, max_tokens=8, arrival_time=0),
        make_request("low_new", 3, max_tokens=8, arrival_time=1))
    step(sched)
    add(sched, make_request("high", 3, priority=-1, arrival_time=2), make_request("low_late", 3, arrival_time=3))
    out = step(sched)
    assert ids(out.preempted) == ["low_new"]
    assert chunks(out) == [("low_old", 1), ("high", 3)]
    assert ids(sched.waiting) == ["low_new", "low_late"]  # the victim keeps its place in its class
    assert chunks(step(sched)) == [("high", 1), ("low_old", 1)]  # no more victims: nothing waits above "low"


def test_equal_priority_waiting_request_preempts_nothing():
    sched = make_scheduler(max_num_seqs=1, max_num_batched_tokens=64)
    add(sched, make_request("a", 3, max_tokens=4, arrival_time=0))
    step(sched)
    add(sched, make_request("b", 3, arrival_time=1))
    out = step(sched)
    assert out.preempted == [] and chunks(out) == [("a", 1)]


# -- preemption ----------------------------------------------------------------------------------------

def _two_decoders_filling_the_pool(**kw_b) -> tuple[Scheduler, Request, Request]:
    """A pool of 4 blocks; a (older) and b each hold 2 blocks with 9 tokens, so the next decode needs a block."""
    sched = make_scheduler(num_blocks=4)
    a = make_request("a", 7, max_tokens=4, arrival_time=0)
    b = make_request("b", 7, max_tokens=8, arrival_time=1, **kw_b)
    add(sched, a, b)
    assert [s.block_ids for s in step(sched).scheduled] == [[0, 1], [2, 3]]
    step(sched)
    assert a.num_tokens == b.num_tokens == 9 and sched.kv.num_free_blocks == 0
    return sched, a, b


def test_newest_running_request_is_preempted_when_blocks_run_out():
    sched, a, b = _two_decoders_filling_the_pool()
    out = step(sched)
    assert out.preempted == [b]
    assert chunks(out) == [("a", 1)] and out.scheduled[0].block_ids == [0, 1, 3]  # b's tail block evicted
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert sched.kv.block_ids(b) == [] and ids(sched.waiting) == ["b"] and ids(sched.running) == ["a"]
    assert b.metrics.num_preemptions == 1 and sched.num_preemptions == 1
    assert b.output_token_ids == [1, 1]  # generated tokens are kept and recomputed


def test_no_waiting_request_is_admitted_in_a_step_that_preempts():
    sched, a, b = _two_decoders_filling_the_pool()
    add(sched, make_request("vip", 1, priority=-1, arrival_time=5))  # would fit in b's freed block
    out = step(sched)
    assert out.preempted == [b] and chunks(out) == [("a", 1)]
    assert ids(sched.waiting) == ["vip", "b"]
    assert chunks(step(sched)) == [("a", 1), ("vip", 1)]


def test_preempted_request_goes_back_ahead_of_newer_requests_of_its_class():
    sched, a, b = _two_decoders_filling_the_pool()
    add(sched, make_request("newer", 30, arrival_time=2), make_request("vip", 30, priority=-1, arrival_time=3))
    step(sched)
    assert ids(sched.waiting) == ["vip", "b", "newer"]


def test_lower_priority_request_is_preempted_even_if_older():
    sched = make_scheduler(num_blocks=4)
    low = make_request("low", 7, arrival_time=0)
    high = make_request("high", 7, priority=-1, arrival_time=1)
    add(sched, low, high)
    assert [(s.request.request_id, s.block_ids) for s in step(sched).scheduled] == [("high", [0, 1])]
    assert [(s.request.request_id, s.block_ids) for s in step(sched).scheduled] == [("high", [0, 1]), ("low", [2, 3])]
    out = step(sched)
    assert out.preempted == [low] and chunks(out) == [("high", 1)]
    assert out.scheduled[0].block_ids == [0, 1, 3]


def test_request_preempts_itself_when_it_is_the_newest():
    sched = make_scheduler(num_blocks=4)
    a = make_request("a", 6, arrival_time=0)
    b = make_request("b", 7, arrival_time=1)
    add(sched, a, b)
    step(sched)
    step(sched)
    out = step(sched)  # a still fits its 2 blocks; b needs a third
    assert out.preempted == [b] and chunks(out) == [("a", 1)]
    assert out.scheduled[0].block_ids == [0, 1]
    assert sched.kv.num_free_blocks == 2


def test_preempted_request_hits_its_cached_prefix_when_readmitted():
    sched, a, b = _two_decoders_filling_the_pool()
    step(sched)  # b preempted: blocks 2 (tokens 0-3) and 3 (4-7) cached; a takes 3
    out = step(sched)  # a's last decode; b still does not fit
    assert chunks(out) == [("a", 1)] and a.is_finished
    out = step(sched)
    assert chunks(out) == [("b", 5)]
    assert out.scheduled[0].block_ids == [2, 3, 1]
    assert b.status == RequestStatus.RUNNING and b.num_computed_tokens == 9
    assert b.num_cached_tokens == 0  # the prompt's own cache hit was counted at first admission


def test_preempted_request_is_recomputed_and_finishes():
    sched, a, b = _two_decoders_filling_the_pool()
    for _ in range(20):
        if not sched.has_unfinished():
            break
        step(sched)
    assert a.is_finished and b.is_finished
    assert b.num_output_tokens == 8 and b.metrics.num_preemptions == 1
    assert sched.kv.num_free_blocks == 4


def test_prefix_lookup_is_counted_once_per_request_across_preemption():
    """record_prefix_lookup says it is called once per request: a readmission is not a new query."""
    sched, a, b = _two_decoders_filling_the_pool()
    assert (sched.kv.stats.queried_tokens, sched.kv.stats.hit_tokens) == (14, 0)
    for _ in range(3):
        step(sched)  # b is preempted, then readmitted with a hit on its own recomputed-prefix block
    assert b.status == RequestStatus.RUNNING and b.metrics.num_preemptions == 1
    assert (sched.kv.stats.queried_tokens, sched.kv.stats.hit_tokens) == (14, 0)


# -- prefix cache through the scheduler ----------------------------------------------------------------

def test_waiting_request_starts_after_its_cached_prefix():
    sched = make_scheduler()
    first = make_request("first", 10, max_tokens=1)
    add(sched, first)
    step(sched)
    assert first.is_finished
    second = make_request("second", first.prompt_token_ids[:8] + [5, 6, 7], arrival_time=1)
    add(sched, second)
    out = step(sched)
    assert chunks(out) == [("second", 3)] and out.scheduled[0].block_ids == [0, 1, 3]
    assert second.num_cached_tokens == 8
    assert (sched.kv.stats.queried_tokens, sched.kv.stats.hit_tokens) == (21, 8)


def test_prefix_hit_chunk_is_capped_by_the_budget():
    sched = make_scheduler(max_num_batched_tokens=4)
    first = make_request("first", 8, max_tokens=1)
    add(sched, first)
    step(sched)
    step(sched)
    second = make_request("second", first.prompt_token_ids + list(range(10)), arrival_time=1)
    add(sched, second)
    assert chunks(step(sched)) == [("second", 4)]
    assert second.num_computed_tokens == 12
    assert [chunks(step(sched)) for _ in range(2)] == [[("second", 4)], [("second", 2)]]


def test_disabled_prefix_caching_recomputes_everything():
    sched = make_scheduler(enable_prefix_caching=False)
    first = make_request("first", 10, max_tokens=1)
    add(sched, first)
    step(sched)
    second = make_request("second", first.prompt_token_ids + [1], arrival_time=1)
    add(sched, second)
    assert chunks(step(sched)) == [("second", 11)]
    assert second.num_cached_tokens == 0 and sched.kv.stats.hit_tokens == 0


# -- finish / abort ------------------------------------------------------------------------------------

def test_finish_running_request_mid_prefill_frees_all_blocks():
    sched = make_scheduler(max_num_batched_tokens=8)
    req = make_request("r", 20)
    add(sched, req)
    step(sched)
    sched.finish(req, FinishReason.ABORT)
    assert req.is_finished and req.finish_reason == FinishReason.ABORT
    assert sched.kv.block_ids(req) == [] and sched.kv.num_free_blocks == 16
    assert not sched.has_unfinished()


def test_finish_waiting_request_removes_it_and_holds_no_blocks():
    sched = make_scheduler(max_num_seqs=1)
    a, b = make_request("a", 4, arrival_time=0), make_request("b", 4, arrival_time=1)
    add(sched, a, b)
    step(sched)
    sched.finish(b, FinishReason.ABORT)
    assert ids(sched.waiting) == [] and b.is_finished
    assert sched.kv.num_used_blocks == 1


def test_finish_preempted_request_leaves_pool_consistent():
    sched, a, b = _two_decoders_filling_the_pool()
    step(sched)
    sched.finish(b, FinishReason.ABORT)
    sched.finish(b, FinishReason.ABORT)  # twice is a no-op
    sched.finish(a, FinishReason.ABORT)
    assert not sched.has_unfinished() and sched.kv.num_free_blocks == 4
    assert all(blk.ref_cnt == 0 for blk in sched.kv.pool.blocks)


# -- no deadlock ---------------------------------------------------------------------------------------

def _random_workload(rng: random.Random, num_requests: int, pool_tokens: int) -> list[Request]:
    prefixes = [[rng.randrange(1000) for _ in range(n)] for n in (5, 12, 20)]
    reqs = []
    for i in range(num_requests):
        prompt = list(rng.choice(prefixes))[:rng.randint(1, 20)] + [rng.randrange(50) for _ in range(rng.randrange(10))]
        max_tokens = rng.randint(1, pool_tokens - len(prompt))
        reqs.append(make_request(f"r{i}", prompt, priority=rng.choice([0, 0, 1]), max_tokens=max_tokens,
                                 arrival_time=float(i)))
    return reqs


def test_random_workload_always_finishes_without_leaks():
    for seed in range(5):
        rng = random.Random(seed)
        sched = make_scheduler(num_blocks=10, max_num_seqs=4, max_num_batched_tokens=12)
        pending = _random_workload(rng, 40, pool_tokens=10 * BS)
        for num_steps in range(3000):
            while pending and rng.random() < 0.3:
                sched.add(pending.pop(0))
            if not pending and not sched.has_unfinished():
                break
            step(sched, token_id=rng.randrange(50))
            assert sched.kv.num_used_blocks == len({i for r in sched.running for i in sched.kv.block_ids(r)})
        else:
            raise AssertionError(f"seed {seed}: workload did not finish in {num_steps} steps")
        assert sched.kv.num_free_blocks == 10
        assert all(blk.ref_cnt == 0 for blk in sched.kv.pool.blocks)
