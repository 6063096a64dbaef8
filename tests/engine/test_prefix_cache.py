"""Prefix caching on the real model: shared prefixes reuse blocks, and never change the output."""

from __future__ import annotations

from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.engine.sampling import SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def _prompts(tokenizer) -> tuple[list[int], list[list[int]]]:
    words = tokenizer.encode(" ".join(f"fact {i} is that block {i} holds sixteen tokens." for i in range(80)))
    prefix = words[:512]
    questions = ["\nQuestion: what does block 3 hold?", "\nQuestion: how many facts?", "\nSummary:"]
    return prefix, [prefix + tokenizer.encode(q) for q in questions]


def test_shared_512_token_prefix_reuses_blocks(smollm2_dir):
    engine = LLMEngine(smollm2_dir, EngineConfig(num_kv_blocks=256))
    prefix, prompts = _prompts(engine.tokenizer)
    first = engine.generate([prompts[0]], GREEDY)[0]
    assert first.num_cached_tokens == 0
    hits_before = engine.kv.stats.hit_tokens
    second = engine.generate([prompts[1]], GREEDY)[0]
    assert second.num_cached_tokens == 512  # 32 full blocks of 16
    assert engine.kv.stats.hit_tokens - hits_before == 512
    assert engine.stats().prefix_cache_hit_rate > 0


def test_outputs_identical_with_and_without_prefix_caching(smollm2_dir):
    results = {}
    for caching in (True, False):
        engine = LLMEngine(smollm2_dir, EngineConfig(num_kv_blocks=256, enable_prefix_caching=caching))
        _, prompts = _prompts(engine.tokenizer)
        # sequentially (hits on finished requests' blocks) and then all at once
        seq = [engine.generate([p], GREEDY)[0].outputs[0].token_ids for p in prompts]
        batch = [o.outputs[0].token_ids for o in engine.generate(prompts, GREEDY)]
        results[caching] = (seq, batch)
        assert (engine.kv.stats.hit_tokens > 0) == caching
    assert results[True] == results[False]
    assert results[True][0] == results[True][1]


def test_cache_salt_isolates_prefixes(smollm2_dir):
    engine = LLMEngine(smollm2_dir, EngineConfig(num_kv_blocks=256))
    _, prompts = _prompts(engine.tokenizer)
    engine.add_request("a", prompts[0], GREEDY, cache_salt="tenant-a")
    while engine.has_unfinished_requests():
        engine.step()
    engine.add_request("b", prompts[1], GREEDY, cache_salt="tenant-b")
    engine.add_request("c", prompts[1], GREEDY, cache_salt="tenant-a")
    cached = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            cached[out.request_id] = out.num_cached_tokens
    assert cached == {"b": 0, "c": 512}
