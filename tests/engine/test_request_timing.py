"""What the engine times for each request: its prefill chunks, the gap before each token, the detokenizer.

The clock is a counter (each read is one tick later), so every interval is a count of clock reads and the
assertions are exact."""

from __future__ import annotations

import itertools

from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.engine.sampling import SamplingParams


def test_prefill_chunks_token_gaps_and_detokenizer_time(smollm2_dir):
    ticks = itertools.count()
    engine = LLMEngine(smollm2_dir, EngineConfig(num_kv_blocks=32, max_num_batched_tokens=32),
                       clock=lambda: float(next(ticks)))
    prompt = engine.tokenizer.encode(" ".join(f"item{i}" for i in range(40)))[:100]
    engine.add_request("timed", prompt, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    last = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            last = out
    m = last.metrics[0]
    assert len(last.outputs[0].token_ids) == 6

    # 100 prompt tokens under a 32-token budget: four chunks, one step each, back to back, the last one
    # the step that sampled the first token
    assert [tokens for _, _, tokens in m.prefill_chunks] == [32, 32, 32, 4]
    assert all(start < end for start, end, _ in m.prefill_chunks)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(m.prefill_chunks))
    assert m.first_scheduled_time <= m.prefill_chunks[0][0]
    assert m.prefill_chunks[-1][1] == m.first_token_time

    # one gap per token after the first, adding up to first -> last token
    assert len(m.token_gaps) == 5 and all(g > 0 for g in m.token_gaps)
    assert sum(m.token_gaps) == m.last_token_time - m.first_token_time
    # the detokenizer is timed around each token alone: one tick each on this clock
    assert m.detokenize_s == 6
