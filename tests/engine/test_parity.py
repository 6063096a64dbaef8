"""Greedy parity with HF transformers: the engine's tokens equal generate(do_sample=False), however batched."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from infercloud.bench.quality import parity_prompts
from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.engine.sampling import SamplingParams
from tests.conftest import hf_greedy

MAX_NEW = 24


@pytest.fixture(scope="module")
def smollm2_case(smollm2_dir, smollm2_engine, hf_smollm2):
    tok = smollm2_engine.tokenizer
    prompts = parity_prompts(tok)
    assert len(prompts) >= 8 and max(map(len, prompts)) > 300 and min(map(len, prompts)) < 5
    expected = [hf_greedy(hf_smollm2, p, MAX_NEW, tok.eos_token_ids[0]) for p in prompts]
    return smollm2_dir, prompts, expected


GREEDY = SamplingParams(max_tokens=MAX_NEW, temperature=0.0)


def _tokens(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


def test_one_at_a_time(smollm2_case, smollm2_engine):
    _, prompts, expected = smollm2_case
    got = [_tokens(smollm2_engine.generate([p], GREEDY))[0] for p in prompts]
    assert got == expected


def test_one_batch_mixed_lengths(smollm2_case, smollm2_engine):
    _, prompts, expected = smollm2_case
    assert _tokens(smollm2_engine.generate(prompts, GREEDY)) == expected


def test_chunked_prefill(smollm2_case):
    model_dir, prompts, expected = smollm2_case
    engine = LLMEngine(model_dir, EngineConfig(max_num_batched_tokens=48, num_kv_blocks=512, dtype="float32"))
    assert _tokens(engine.generate(prompts, GREEDY)) == expected
    assert engine.stats().num_steps > sum(len(p) for p in prompts) // 48  # prompts really were split


def test_preemption(smollm2_case):
    model_dir, prompts, expected = smollm2_case
    longest = max(len(p) for p in prompts) + MAX_NEW
    engine = LLMEngine(model_dir, EngineConfig(block_size=16, num_kv_blocks=longest // 16 + 8,
                                               enable_prefix_caching=False, dtype="float32"))
    assert _tokens(engine.generate(prompts, GREEDY)) == expected
    assert engine.scheduler.num_preemptions > 0
    assert engine.kv.num_used_blocks == 0


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
def test_tiny_random_models(arch, tiny_model_dirs):
    model_dir = tiny_model_dirs[arch]
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [list(range(100, 100 + n)) for n in (3, 17, 40, 130)]
    expected = [hf_greedy(hf, p, 16, None) for p in prompts]
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    for config in (EngineConfig(block_size=8, num_kv_blocks=256, dtype="float32"),   # block 8: SDPA
                   EngineConfig(block_size=16, num_kv_blocks=256, dtype="float32"),  # the kernel
                   EngineConfig(block_size=8, num_kv_blocks=256, max_num_batched_tokens=24, dtype="float32"),
                   EngineConfig(block_size=8, num_kv_blocks=22, enable_prefix_caching=False, dtype="float32")):
        engine = LLMEngine(model_dir, config)
        assert _tokens(engine.generate(prompts, params)) == expected, config
