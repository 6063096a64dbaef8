"""Detokenization and stops: multi-byte characters survive streaming, stop strings cut exactly."""

from __future__ import annotations

from infercloud.engine.detokenizer import IncrementalDetokenizer
from infercloud.engine.sampling import SamplingParams

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def stream_text(engine, request_id, prompt, params, **kwargs):
    """Run one request alone; its text deltas, step by step, and its final output."""
    engine.add_request(request_id, prompt, params, **kwargs)
    deltas, final = [], None
    while engine.has_unfinished_requests():
        for out in engine.step():
            deltas.append(out.outputs[0].delta_text)
            final = out.outputs[0]
    return deltas, final


def test_multibyte_characters_split_across_tokens(smollm2_engine):
    tok = smollm2_engine.tokenizer
    text = "naïve café — 東京 🎉🚀 done"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # some characters really are split over several tokens
    detok = IncrementalDetokenizer(tok.hf, SamplingParams(), prompt_token_ids=tok.encode("Say:"))
    pieces = []
    for token_id in ids:
        detok.append(token_id)
        pieces.append(detok.take_delta(finished=False))
    pieces.append(detok.take_delta(finished=True))
    assert "".join(pieces) == text == detok.text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_cuts_exactly_and_stream_matches(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode_chat(FRANCE)
    full = smollm2_engine.generate([ids], SamplingParams(max_tokens=30, temperature=0.0))[0].outputs[0]
    assert "Paris" in full.text
    deltas, final = stream_text(smollm2_engine, "s1", ids,
                            SamplingParams(max_tokens=30, temperature=0.0, stop=["Paris", "zzz"]))
    assert final.text == full.text[:full.text.index("Paris")]
    assert final.finish_reason == "stop" and final.stop_reason == "Paris"
    assert "".join(deltas) == final.text


def test_stop_string_spanning_tokens(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode_chat(FRANCE)
    full = smollm2_engine.generate([ids], SamplingParams(max_tokens=30, temperature=0.0))[0].outputs[0]
    stop = full.text[8:15]  # an arbitrary span, not aligned to token boundaries
    deltas, final = stream_text(smollm2_engine, "s2", ids, SamplingParams(max_tokens=30, temperature=0.0, stop=[stop]))
    assert final.text == full.text[:full.text.index(stop)]
    assert "".join(deltas) == final.text


def test_stream_concatenation_equals_output_without_stops(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode("Write a poem about the moon:")
    deltas, final = stream_text(smollm2_engine, "s3", ids, SamplingParams(max_tokens=40, temperature=0.8, seed=11))
    assert "".join(deltas) == final.text
    assert final.text == smollm2_engine.tokenizer.decode(final.token_ids)
