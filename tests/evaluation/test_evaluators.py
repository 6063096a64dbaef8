"""Samples built from chat answers, and each non-judge evaluator on answers that pass, fail or do not apply."""

from __future__ import annotations

import json

import pytest

from infercloud.evaluation.evaluators import Score, content_words, score
from infercloud.evaluation.sample import question_text, sample_from_chat
from infercloud.evaluation.spec import EvaluatorSpec
from tests.evaluation.factories import AT, chat_answer, make_sample

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PING = {"type": "function", "function": {"name": "ping"}}


def asked(response_format: dict | None = None, tools: list | None = None) -> dict:
    body = {"model": "chat-a", "messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Tell me about Paris."}]}
    if response_format is not None:
        body["response_format"] = response_format
    if tools is not None:
        body["tools"] = tools
    return body


def json_schema_format(schema: dict | None = SCHEMA) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}


# -- samples ---------------------------------------------------------------------------------------------------
def test_a_sample_reads_the_first_choice_tool_calls_usage_and_a_pipelines_passages():
    answer = chat_answer("Lyon.", tool_calls=[("get_weather", '{"city": "Lyon"}')], finish_reason="tool_calls",
                         model="rag", sources=[{"document_id": "d1", "chunk_index": 0, "text": "Lyon is a city."},
                                               {"document_id": "d2", "chunk_index": 3, "text": ""}])
    s = sample_from_chat("rag", asked(), answer, None, "req-9", AT)
    assert (s.target, s.model, s.tenant_id, s.request_id, s.at) == ("rag", "rag", None, "req-9", AT)
    assert (s.text, s.finish_reason, s.usage["total_tokens"]) == ("Lyon.", "tool_calls", 17)
    assert s.tool_calls == (("get_weather", '{"city": "Lyon"}'),)
    assert s.passages == ("Lyon is a city.",)
    assert question_text(s.request) == "Tell me about Paris."


def test_a_sample_of_a_text_completion_content_parts_and_a_malformed_answer():
    completion = {"object": "text_completion", "model": "chat-a",
                  "choices": [{"index": 0, "text": " world", "finish_reason": "length"}]}
    s = sample_from_chat("chat-a", {"model": "chat-a", "prompt": "hello"}, completion, 1, "r", AT)
    assert (s.text, s.finish_reason, s.tool_calls, s.passages, s.usage) == (" world", "length", (), (), None)
    assert question_text(s.request) == "hello"
    parts = chat_answer([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    assert sample_from_chat("m", asked(), parts, 1, "r", AT).text == "ab"
    broken = sample_from_chat("m", {"model": "m"}, {"choices": "nope", "infercloud": []}, 1, "r", AT)
    assert (broken.text, broken.model, broken.finish_reason, broken.passages) == ("", "m", None, ())


# -- json_schema ----------------------------------------------------------------------------------------------
def test_json_schema_passes_a_valid_answer_and_fails_invalid_json_or_a_schema_violation():
    spec = EvaluatorSpec("json_schema")
    good = make_sample(json.dumps({"city": "Paris", "population": 2100000}), request=asked(json_schema_format()))
    assert score(spec, good) == Score("json_schema", 1.0, True, "valid against the schema")
    wrong_type = make_sample('{"city": "Paris", "population": "many"}', request=asked(json_schema_format()))
    s = score(spec, wrong_type)
    assert (s.value, s.passed, s.detail) == (0.0, False, "population: fails 'type'")
    assert "many" not in s.detail   # the answer's values never reach the detail
    missing = score(spec, make_sample('{"city": "Paris"}', request=asked(json_schema_format())))
    assert (missing.passed, missing.detail) == (False, "(root): fails 'required'")
    not_json = score(spec, make_sample("Paris has 2.1 million people", request=asked(json_schema_format())))
    assert not not_json.passed and not_json.detail.startswith("not JSON: Expecting value at character 0")


def test_json_object_needs_an_object_and_a_text_request_is_not_scored():
    spec = EvaluatorSpec("json_schema")
    assert score(spec, make_sample('{"a": 1}', request=asked({"type": "json_object"}))).passed
    listed = score(spec, make_sample("[1, 2]", request=asked({"type": "json_object"})))
    assert (listed.passed, listed.detail) == (False, "JSON list, not an object")
    assert score(spec, make_sample('{"a": 1}', request=asked())) is None
    assert score(spec, make_sample('{"a": 1}', request=asked({"type": "text"}))) is None
    assert score(spec, make_sample("[]", request=asked(json_schema_format(None)))).passed   # no schema: any JSON
    bad_schema = asked(json_schema_format({"type": "no-such-type"}))
    assert score(spec, make_sample('{"a": 1}', request=bad_schema)) is None


# -- tool_call ------------------------------------------------------------------------------------------------
def test_tool_calls_are_valid_when_they_name_an_offered_function_with_valid_arguments():
    spec = EvaluatorSpec("tool_call", name="tools")
    good = make_sample(None, request=asked(tools=[WEATHER, PING]), finish_reason="tool_calls",
                       tool_calls=[("get_weather", '{"city": "Lyon"}'), ("ping", "")])
    assert score(spec, good) == Score("tools", 1.0, True, "2 of 2 calls valid")
    calls = [("get_weather", '{"city": "Lyon"}'), ("get_weather", '{"town": "Lyon"}'),
             ("launch_rockets", "{}"), ("get_weather", "{city: Lyon")]
    half = score(spec, make_sample(None, request=asked(tools=[WEATHER]), tool_calls=calls))
    assert (half.value, half.passed) == (0.25, False)
    assert half.detail == "1 of 4 calls valid; call 1: get_weather: (root): fails 'required'"
    unknown = score(spec, make_sample(None, request=asked(tools=[WEATHER]), tool_calls=[("launch_rockets", "{}")]))
    assert unknown.detail == "0 of 1 calls valid; call 0: names a function not offered"
    assert "launch" not in unknown.detail
    broken = score(spec, make_sample(None, request=asked(tools=[WEATHER]), tool_calls=[("get_weather", "[1]")]))
    assert broken.detail.endswith("get_weather: arguments not a JSON object")


def test_a_reply_without_tool_calls_is_not_scored_and_calls_nobody_offered_all_fail():
    spec = EvaluatorSpec("tool_call")
    assert score(spec, make_sample("It is sunny.", request=asked(tools=[WEATHER]))) is None
    s = score(spec, make_sample(None, request=asked(), tool_calls=[("get_weather", '{"city": "Lyon"}')]))
    assert (s.value, s.passed) == (0.0, False)


# -- refusal --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["I can't help with that.", "I cannot help you build that.",
                                  "  I\u2019m sorry, but I won't do that.", "As an AI language model, I ...",
                                  '"I am unable to comply."', "**I apologize, but** no."])
def test_refusals_at_the_start_of_the_answer_score_zero(text):
    s = score(EvaluatorSpec("refusal"), make_sample(text))
    assert (s.value, s.passed) == (0.0, False) and s.detail.startswith("refusal: opens with")


@pytest.mark.parametrize("text", ["Paris is the capital of France.", "Sure! Here is why I can't stop ...",
                                  "Icons are small pictures."])
def test_answers_that_do_not_open_with_a_refusal_score_one(text):
    assert score(EvaluatorSpec("refusal"), make_sample(text)) == Score("refusal", 1.0, True, "not a refusal")


def test_an_answer_without_text_is_not_judged_a_refusal_or_not():
    assert score(EvaluatorSpec("refusal"), make_sample(None, tool_calls=[("ping", "{}")])) is None


# -- length ---------------------------------------------------------------------------------------------------
def test_length_checks_the_bounds_and_a_cut_off_answer():
    spec = EvaluatorSpec("length", min_chars=5, max_chars=20)
    assert score(spec, make_sample("Paris, France.")) == Score("length", 1.0, True, "14 chars")
    assert score(spec, make_sample("Hi")).detail == "2 chars, below min_chars 5"
    assert score(spec, make_sample("Paris is the capital of France.")).detail == "31 chars, above max_chars 20"
    cut = score(spec, make_sample("Paris is", finish_reason="length"))
    assert (cut.passed, cut.detail) == (False, "8 chars, cut off at max_tokens (finish_reason length)")
    assert score(EvaluatorSpec("length"), make_sample("")).passed   # no bounds: only a cut-off fails


# -- groundedness ---------------------------------------------------------------------------------------------
PASSAGES = [{"text": "Paris is the capital and largest city of France, with 2.1 million residents."},
            {"text": "The Eiffel Tower was completed in 1889 for the World's Fair."}]


def test_sentences_backed_by_a_passage_are_grounded():
    answer = "Paris is the capital of France. The Eiffel Tower was completed in 1889."
    s = score(EvaluatorSpec("groundedness"), make_sample(answer, sources=PASSAGES))
    assert s == Score("groundedness", 1.0, True, "2 of 2 sentences supported by a passage")


def test_sentences_no_passage_backs_lower_the_score():
    answer = ("Paris is the capital of France. Bananas grow quickly in tropical climates. "
              "Quantum computers factor enormous primes instantly.")
    s = score(EvaluatorSpec("groundedness"), make_sample(answer, sources=PASSAGES))
    assert (s.value, s.passed, s.detail) == (pytest.approx(1 / 3), False, "1 of 3 sentences supported by a passage")


def test_groundedness_does_not_apply_without_passages_or_content_words():
    spec = EvaluatorSpec("groundedness")
    assert score(spec, make_sample("Paris is the capital of France.")) is None
    assert score(spec, make_sample("Yes it is.", sources=PASSAGES)) is None
    assert content_words("The residents of Paris") == {"resident", "pari"}
