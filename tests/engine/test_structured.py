"""Grammar-constrained decoding in the engine: masks per row of a mixed batch, n > 1, seeds, logprobs, prefix
caching, preemption, resumed requests, logit_bias and refused grammars (the real model throughout)."""

from __future__ import annotations

import json

import pytest

from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.engine.sampling import InvalidParamError, SamplingParams
from infercloud.engine.structured.spec import StructuredSpec
from tests.engine.test_stop_and_stream import stream_text

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 12},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3}},
    "required": ["name", "age", "pets"]}
ASK = [{"role": "user", "content": "Describe a person as JSON with name, age and pets."}]


def schema_spec(schema: dict = PERSON) -> StructuredSpec:
    return StructuredSpec("json_schema", json.dumps(schema))


def check_person(text: str) -> dict:
    value = json.loads(text)
    assert set(value) == {"name", "age", "pets"}
    assert isinstance(value["name"], str) and len(value["name"]) <= 12
    assert isinstance(value["age"], int) and 0 <= value["age"] <= 120
    assert set(value["pets"]) <= {"cat", "dog", "fish"} and len(value["pets"]) <= 3
    return value


def test_a_mixed_batch_masks_only_constrained_rows(smollm2_engine):
    prompt = smollm2_engine.tokenizer.encode_chat(ASK)
    free = SamplingParams(max_tokens=24, temperature=0.0)
    [alone] = smollm2_engine.generate([prompt], free)
    outs = smollm2_engine.generate([prompt] * 4, [
        SamplingParams(max_tokens=120, temperature=0.0, structured=schema_spec()),
        free,
        SamplingParams(max_tokens=120, temperature=1.0, seed=5, n=3, structured=schema_spec()),
        SamplingParams(max_tokens=8, temperature=0.7, seed=1, structured=StructuredSpec("choice", '["yes", "no"]')),
    ])
    assert outs[0].outputs[0].finish_reason == "stop"
    check_person(outs[0].outputs[0].text)
    assert outs[1].outputs[0].token_ids == alone.outputs[0].token_ids   # an unconstrained row is untouched
    for c in outs[2].outputs:
        assert c.finish_reason == "stop"
        check_person(c.text)
    assert outs[3].outputs[0].text in ("yes", "no")


def test_seeded_constrained_sampling_repeats_and_logprobs_are_raw(smollm2_engine):
    prompt = smollm2_engine.tokenizer.encode_chat(ASK)
    params = SamplingParams(max_tokens=120, temperature=1.0, seed=11, logprobs=2, structured=schema_spec())
    [a] = smollm2_engine.generate([prompt], params)
    [b] = smollm2_engine.generate([prompt], params)
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    check_person(a.outputs[0].text)
    _, final = stream_text(smollm2_engine, "lp", prompt, params)
    assert final.token_ids == a.outputs[0].token_ids


def test_regex_grammar_and_structural_tag(smollm2_engine):
    prompt = smollm2_engine.tokenizer.encode_chat([{"role": "user", "content": "Give me a phone number."}])
    [phone] = smollm2_engine.generate([prompt], SamplingParams(
        max_tokens=30, temperature=0.0, structured=StructuredSpec("regex", r"\(\d{3}\) \d{3}-\d{4}")))
    assert phone.outputs[0].finish_reason == "stop"
    assert len(phone.outputs[0].text) == 14 and phone.outputs[0].text[0] == "("
    [ebnf] = smollm2_engine.generate([prompt], SamplingParams(
        max_tokens=30, temperature=0.0, structured=StructuredSpec("grammar", 'root ::= "A" [0-9] [0-9] "!"')))
    assert ebnf.outputs[0].text[0] == "A" and ebnf.outputs[0].text.endswith("!") and len(ebnf.outputs[0].text) == 4
    tag = {"type": "structural_tag", "format": {"type": "tag", "begin": "<v>",
                                                "content": {"type": "json_schema", "json_schema": {"type": "integer"}},
                                                "end": "</v>"}}
    [tagged] = smollm2_engine.generate([prompt], SamplingParams(
        max_tokens=30, temperature=0.0, structured=StructuredSpec("structural_tag", json.dumps(tag))))
    text = tagged.outputs[0].text
    assert text.startswith("<v>") and text.endswith("</v>") and int(text[3:-4]) is not None


def test_prefix_cache_and_preemption_keep_the_grammar(smollm2_dir):
    engine = LLMEngine(smollm2_dir, EngineConfig(num_kv_blocks=12, block_size=16, max_num_seqs=8))
    prompt = engine.tokenizer.encode_chat(ASK)
    params = [SamplingParams(max_tokens=100, temperature=1.0, seed=s, structured=schema_spec()) for s in range(8)]
    outs = engine.generate([prompt] * 8, params)
    assert engine.scheduler.num_preemptions > 0     # 8 sequences do not fit 12 blocks at once
    assert engine.kv.stats.hit_tokens > 0           # the shared prompt came from the prefix cache
    for out in outs:
        assert out.outputs[0].finish_reason == "stop"
        check_person(out.outputs[0].text)
    assert engine.kv.num_used_blocks == 0


def test_a_resumed_request_replays_its_grammar(smollm2_engine):
    prompt = smollm2_engine.tokenizer.encode_chat(ASK)
    params = SamplingParams(max_tokens=120, temperature=0.8, seed=3, structured=schema_spec())
    deltas, whole = stream_text(smollm2_engine, "whole", prompt, params)
    check_person(whole.text)
    for cut in (1, 9):
        rest, resumed = stream_text(smollm2_engine, f"resumed-{cut}", prompt, params,
                                    resume_token_ids=whole.token_ids[:cut])
        assert resumed.token_ids == whole.token_ids
        assert "".join(deltas[:cut]) + "".join(rest) == whole.text
    not_json = smollm2_engine.tokenizer.encode("hello", add_special_tokens=False)
    with pytest.raises(InvalidParamError, match="do not match") as err:
        smollm2_engine.add_request("bad-resume", prompt, params, resume_token_ids=not_json)
    assert err.value.param == "resume_token_ids"
    assert not smollm2_engine.has_unfinished_requests()


@pytest.mark.parametrize("spec, message", [
    (StructuredSpec("json_schema", '{"type": "objectx"}'), "objectx"),
    (StructuredSpec("json_schema", "{not json"), "json"),
    (StructuredSpec("regex", "(", param="structured_outputs"), "regex"),
    (StructuredSpec("grammar", "root ::= missing_rule", param="guided_grammar"), "grammar"),
    (StructuredSpec("choice", "[]", param="guided_choice"), "choice"),
    (StructuredSpec("structural_tag", '{"type": "nope"}', param="structured_outputs"), "structural tag"),
])
def test_invalid_grammars_are_refused_naming_the_field(smollm2_engine, spec, message):
    with pytest.raises(InvalidParamError, match=message) as err:
        smollm2_engine.add_request("bad", [1, 2, 3], SamplingParams(structured=spec))
    assert err.value.param == spec.param
    assert not smollm2_engine.has_unfinished_requests()


def test_logit_bias_and_its_bounds(smollm2_engine):
    tok = smollm2_engine.tokenizer
    prompt = tok.encode_chat([{"role": "user", "content": "Say something."}])
    paris = tok.encode("Paris", add_special_tokens=False)[0]
    [out] = smollm2_engine.generate([prompt], SamplingParams(max_tokens=3, temperature=0.0, logit_bias={paris: 100}))
    assert out.outputs[0].token_ids == [paris] * 3
    [banned] = smollm2_engine.generate([prompt], SamplingParams(max_tokens=5, temperature=0.0, logprobs=1))
    first = banned.outputs[0].token_ids[0]
    [other] = smollm2_engine.generate([prompt], SamplingParams(max_tokens=1, temperature=0.0, logit_bias={first: -100}))
    assert other.outputs[0].token_ids[0] != first
    with pytest.raises(InvalidParamError):
        SamplingParams(logit_bias={paris: 101})
    with pytest.raises(InvalidParamError) as err:
        smollm2_engine.add_request("bias-id", prompt, SamplingParams(logit_bias={10**9: 1.0}))
    assert err.value.param == "logit_bias"
