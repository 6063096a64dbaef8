"""Abort and accounting: every block comes back, whatever mix of adds, aborts and finishes ran."""

from __future__ import annotations

import random

import pytest

from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import ContextLengthError, LLMEngine
from infercloud.engine.sampling import InvalidParamError, SamplingParams


def _check_pool(engine: LLMEngine) -> None:
    pool = engine.kv.pool
    assert engine.kv.num_free_blocks + engine.kv.num_used_blocks == pool.num_blocks
    assert all(b.ref_cnt >= 0 for b in pool.blocks)
    assert sum(1 for b in pool.blocks if b.ref_cnt == 0) == pool.num_free_blocks


def test_abort_mid_generation_frees_every_block(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode("Count from one to one hundred: one, two,")
    smollm2_engine.add_request("abort-me", ids, SamplingParams(max_tokens=100, temperature=0.0, n=2))
    for _ in range(5):
        smollm2_engine.step()
    assert smollm2_engine.kv.num_used_blocks > 0
    assert smollm2_engine.abort_request("abort-me")
    final = smollm2_engine.step()
    assert [o.request_id for o in final] == ["abort-me"] and final[0].finished
    assert {c.finish_reason for c in final[0].outputs} == {"abort"}
    assert smollm2_engine.kv.num_used_blocks == 0
    assert not smollm2_engine.has_unfinished_requests()
    assert not smollm2_engine.abort_request("abort-me")
    _check_pool(smollm2_engine)


def test_random_workload_of_adds_aborts_and_finishes(smollm2_dir):
    rng = random.Random(0)
    engine = LLMEngine(smollm2_dir, EngineConfig(num_kv_blocks=20, block_size=16, max_num_batched_tokens=96))
    words = engine.tokenizer.encode(" ".join(f"word{i}" for i in range(400)))
    live: set[str] = set()
    finished: set[str] = set()
    for i in range(60):
        action = rng.random()
        if action < 0.6:
            rid = f"r{i}"
            start = rng.choice([0, 0, 50])  # shared starts exercise the prefix cache
            prompt = words[start:start + rng.randint(4, 200)]
            engine.add_request(rid, prompt, SamplingParams(max_tokens=rng.randint(1, 64), temperature=rng.choice([0, 1]),
                                                           n=rng.choice([1, 1, 2])), priority=rng.randint(0, 2))
            live.add(rid)
        elif action < 0.7 and live:
            rid = rng.choice(sorted(live))
            engine.abort_request(rid)
        for out in engine.step():
            if out.finished:
                live.discard(out.request_id)
                finished.add(out.request_id)
        _check_pool(engine)
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                live.discard(out.request_id)
                finished.add(out.request_id)
        _check_pool(engine)
    assert not live and len(finished) > 10
    assert engine.kv.num_used_blocks == 0
    assert engine.scheduler.num_preemptions > 0


def test_requests_that_cannot_fit_are_refused(smollm2_dir, smollm2_engine):
    with pytest.raises(ContextLengthError) as err:
        smollm2_engine.add_request("too-long", [1] * 8000, SamplingParams(max_tokens=500))
    assert "8192" in str(err.value) and "8500" in str(err.value)
    with pytest.raises(InvalidParamError):
        smollm2_engine.add_request("empty", [], SamplingParams())
    with pytest.raises(InvalidParamError):
        smollm2_engine.add_request("bad-id", [10**9], SamplingParams())
    small = LLMEngine(smollm2_dir, EngineConfig(num_kv_blocks=4, block_size=16))
    with pytest.raises(ContextLengthError):
        small.add_request("kv", [1] * 60, SamplingParams(max_tokens=10))
    assert not smollm2_engine.has_unfinished_requests()


def test_request_ids_of_sequences_cannot_collide(smollm2_engine):
    smollm2_engine.add_request("x", [1, 2, 3], SamplingParams(max_tokens=2, n=2))
    for taken in ("x", "x#0", "x#1"):
        with pytest.raises(ValueError):
            smollm2_engine.add_request(taken, [1, 2, 3], SamplingParams(max_tokens=2))
    smollm2_engine.abort_request("x")
    smollm2_engine.step()
    assert smollm2_engine.kv.num_used_blocks == 0
