"""bench/steps.py: decode steps timed at a batch size, on the real model."""

from __future__ import annotations

from infercloud.bench.steps import parse_setting, time_steps
from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine


def test_parse_setting_gives_engine_fields():
    assert parse_setting("dtype=bfloat16,quantization=int8") == {"dtype": "bfloat16", "quantization": "int8"}
    assert parse_setting("") == {}


def test_time_steps_decodes_the_whole_batch_and_leaves_no_blocks(smollm2_dir):
    engine = LLMEngine(smollm2_dir, EngineConfig(num_kv_blocks=64, dtype="bfloat16"))
    before = engine.stats().num_generated_tokens
    result = time_steps(engine, batch=4, context=20, steps=3, seed=1)
    assert result["batch"] == 4 and result["ms_per_step"] > 0
    assert engine.stats().num_generated_tokens - before >= 4 * (1 + 2 + 3)   # first token, warm-up, timed steps
    assert engine.kv.num_used_blocks == 0 and not engine.has_unfinished_requests()
