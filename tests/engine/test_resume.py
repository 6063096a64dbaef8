"""Resuming a request from tokens another engine generated: same tokens and text as one undisturbed run."""

from __future__ import annotations

import pytest

from infercloud.engine.sampling import InvalidParamError, SamplingParams
from tests.engine.test_stop_and_stream import stream_text

STORY = [{"role": "user", "content": "Tell me a short story about a robot who learns to paint."}]


@pytest.mark.parametrize("params", [
    SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True),
    SamplingParams(max_tokens=40, temperature=0.9, top_p=0.95, seed=7, ignore_eos=True),
    SamplingParams(max_tokens=40, temperature=0.8, seed=3, frequency_penalty=0.5, repetition_penalty=1.2,
                   ignore_eos=True),
], ids=["greedy", "seeded", "seeded-penalties"])
def test_resumed_request_continues_exactly(smollm2_engine, params):
    prompt = smollm2_engine.tokenizer.encode_chat(STORY)
    deltas, whole = stream_text(smollm2_engine, "whole", prompt, params)
    for cut in (1, 17):
        first_part = "".join(deltas[:cut])      # what the dead replica had streamed after `cut` tokens
        rest, resumed = stream_text(smollm2_engine, f"resumed-{cut}", prompt, params,
                                    resume_token_ids=whole.token_ids[:cut])
        assert resumed.token_ids == whole.token_ids
        assert first_part + "".join(rest) == whole.text == resumed.text


def test_resume_keeps_stop_string_holdback(smollm2_engine):
    prompt = smollm2_engine.tokenizer.encode_chat(STORY)
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=["zzzz-never"])
    deltas, whole = stream_text(smollm2_engine, "whole-stop", prompt, params)
    rest, _ = stream_text(smollm2_engine, "resumed-stop", prompt, params, resume_token_ids=whole.token_ids[:10])
    assert "".join(deltas[:10]) + "".join(rest) == whole.text


def test_resume_rejects_what_cannot_continue(smollm2_engine):
    prompt = smollm2_engine.tokenizer.encode_chat(STORY)
    with pytest.raises(InvalidParamError, match="n == 1"):
        smollm2_engine.add_request("r1", prompt, SamplingParams(max_tokens=8, n=2), resume_token_ids=[5])
    with pytest.raises(InvalidParamError, match="nothing to generate"):
        smollm2_engine.add_request("r2", prompt, SamplingParams(max_tokens=2), resume_token_ids=[5, 6])
    assert not smollm2_engine.has_unfinished_requests()
