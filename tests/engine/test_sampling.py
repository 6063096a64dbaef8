"""Sampling on the real model: seeds reproduce across batches, filters and penalties do what they say."""

from __future__ import annotations

import pytest

from infercloud.engine.sampling import InvalidParamError, SamplingParams

CHAT = [{"role": "user", "content": "Tell me a short story about a robot."}]


def _run(engine, prompts, params):
    return [o.outputs for o in engine.generate(prompts, params)]


def test_seed_reproducible_across_batch_compositions(smollm2_engine):
    tok = smollm2_engine.tokenizer
    target = tok.encode_chat(CHAT)
    params = SamplingParams(max_tokens=20, temperature=0.9, top_p=0.95, seed=1234)
    alone = _run(smollm2_engine, [target], params)[0][0].token_ids
    others = [tok.encode(t) for t in ("Once upon a time", "1, 2, 3,", "The weather today is")]
    mixed = [SamplingParams(max_tokens=30, temperature=1.0)] * 3 + [params]
    in_batch = [o.outputs[0].token_ids for o in smollm2_engine.generate(others + [target], mixed)][-1]
    first = [o.outputs[0].token_ids for o in smollm2_engine.generate([target] + others, [params] + mixed[:3])][0]
    assert alone == in_batch == first
    unseeded = {tuple(_run(smollm2_engine, [target], SamplingParams(max_tokens=20, temperature=0.9))[0][0].token_ids)
                for _ in range(3)}
    assert len(unseeded) > 1


def test_temperature_zero_equals_greedy_sampling_path(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode_chat(CHAT)
    greedy = _run(smollm2_engine, [ids], SamplingParams(max_tokens=16, temperature=0.0))[0][0].token_ids
    for params in (SamplingParams(max_tokens=16, temperature=1.0, top_k=1, seed=3),
                   SamplingParams(max_tokens=16, temperature=0.7, top_p=1e-6, seed=4),
                   SamplingParams(max_tokens=16, temperature=1.5, min_p=1.0, seed=5)):
        assert _run(smollm2_engine, [ids], params)[0][0].token_ids == greedy


def test_n_sequences_differ_and_are_seeded(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode_chat(CHAT)
    params = SamplingParams(max_tokens=12, temperature=1.0, n=3, seed=7)
    a = [c.token_ids for c in _run(smollm2_engine, [ids], params)[0]]
    b = [c.token_ids for c in _run(smollm2_engine, [ids], params)[0]]
    assert a == b and len({tuple(x) for x in a}) == 3


def test_logprobs_per_step(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode_chat(CHAT)
    smollm2_engine.add_request("lp", ids, SamplingParams(max_tokens=5, temperature=0.0, logprobs=3))
    entries = []
    while smollm2_engine.has_unfinished_requests():
        for out in smollm2_engine.step():
            entries += out.outputs[0].delta_logprobs or []
    assert len(entries) == 5
    for e in entries:
        assert len(e.top) == 3
        assert e.top[0][0] == e.token_id and e.top[0][1] == pytest.approx(e.logprob)
        assert e.top[0][1] >= e.top[1][1] >= e.top[2][1] and e.logprob <= 0


def test_min_tokens_and_stop_token_ids(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    short = _run(smollm2_engine, [ids], SamplingParams(max_tokens=40, temperature=0.0))[0][0]
    assert short.finish_reason == "stop" and len(short.token_ids) < 20
    longer = _run(smollm2_engine, [ids], SamplingParams(max_tokens=40, temperature=0.0,
                                                        min_tokens=len(short.token_ids) + 5))[0][0]
    assert len(longer.token_ids) >= len(short.token_ids) + 5
    stop_id = short.token_ids[2]
    cut = _run(smollm2_engine, [ids], SamplingParams(max_tokens=40, temperature=0.0, stop_token_ids=[stop_id]))[0][0]
    assert cut.token_ids == short.token_ids[:3] and cut.stop_reason == stop_id and cut.finish_reason == "stop"
    capped = _run(smollm2_engine, [ids], SamplingParams(max_tokens=4, temperature=0.0))[0][0]
    assert capped.token_ids == short.token_ids[:4] and capped.finish_reason == "length"


def test_penalties_reduce_repetition(smollm2_engine):
    ids = smollm2_engine.tokenizer.encode("apple apple apple apple apple apple apple apple")
    base = _run(smollm2_engine, [ids], SamplingParams(max_tokens=24, temperature=0.0))[0][0].token_ids
    for params in (SamplingParams(max_tokens=24, temperature=0.0, repetition_penalty=1.8),
                   SamplingParams(max_tokens=24, temperature=0.0, frequency_penalty=2.0),
                   SamplingParams(max_tokens=24, temperature=0.0, presence_penalty=2.0)):
        penalized = _run(smollm2_engine, [ids], params)[0][0].token_ids
        assert penalized != base
        assert len(set(penalized)) > len(set(base))


@pytest.mark.parametrize("field,value", [("temperature", -1), ("top_p", 0), ("max_tokens", 0), ("n", 0),
                                         ("logprobs", 21), ("repetition_penalty", 0)])
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(InvalidParamError) as err:
        SamplingParams(**{field: value})
    assert err.value.param == field
