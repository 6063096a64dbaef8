"""Structured outputs on a real single-box server, through the official `openai` client.

The core check: NUM_SCHEMAS generated JSON schemas (tests/agents/schemas.py), each asked for with
`response_format: json_schema` once greedy and once sampled (temperature 1, a seed), sent 32 at a time so the
engine decodes them in one batch. Every reply that ends by itself must be JSON valid against its schema
(jsonschema, plus strict mode: no property the schema does not name) with no free whitespace; nearly all
must end by themselves well within max_tokens. Then the other constraint kinds (json_object, regex, choice,
EBNF grammar, vLLM's structured_outputs and guided_*), the 400 for a bad schema, n=2, streaming, logprobs
and /v1/completions with a list of prompts.
"""

from __future__ import annotations

import json
import re

import openai
import pytest
from pydantic import BaseModel, Field

from tests.agents.conftest import (
    SMOL,
    free_whitespace,
    loads,
    run_concurrently,
    validate,
)
from tests.agents.schemas import describe, schema_for

NUM_SCHEMAS = 200
MAX_TOKENS = 256
MAX_CUT = 2            # of the 2 * NUM_SCHEMAS replies, at most this many may end with "length"
CONCURRENCY = 32

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "pets"], "properties": {
    "name": {"type": "string", "maxLength": 12},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "pets": {"type": "array", "minItems": 1, "maxItems": 3,
             "items": {"type": "string", "enum": ["cat", "dog", "fish"]}}}}


@pytest.fixture(scope="module")
def client(agent_server):
    return openai.OpenAI(base_url=f"{agent_server.url}/v1", api_key="unused", max_retries=0, timeout=600)


def json_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def ask(client, prompt: str, **kwargs):
    return client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": prompt}],
                                          **{"max_tokens": MAX_TOKENS, "temperature": 0, **kwargs})


def check_json(text: str, schema: dict):
    value = loads(text)
    validate(value, schema)
    assert not free_whitespace(text), f"free whitespace at {free_whitespace(text)} in {text!r}"
    return value


# -- generated schemas --------------------------------------------------------------------------------------

def test_generated_schemas_greedy_and_sampled_validate(agent_server):
    async def one(aclient, job: tuple[int, float]) -> tuple[int, float, str, str, int]:
        seed, temperature = job
        schema = schema_for(seed)
        r = await aclient.chat.completions.create(
            model=SMOL, messages=[{"role": "user", "content": describe(schema)}], max_tokens=MAX_TOKENS,
            response_format=json_format(schema, f"schema_{seed}"), temperature=temperature,
            seed=seed if temperature else None)
        (choice,) = r.choices
        return seed, temperature, choice.finish_reason, choice.message.content, r.usage.completion_tokens

    jobs = [(seed, t) for seed in range(NUM_SCHEMAS) for t in (0.0, 1.0)]
    results = run_concurrently(agent_server, one, jobs, limit=CONCURRENCY)

    assert len(results) == 2 * NUM_SCHEMAS
    failures, cut = [], []
    for seed, temperature, finish, text, tokens in results:
        assert finish in ("stop", "length"), (seed, temperature, finish, text)
        if finish == "length":
            assert tokens == MAX_TOKENS, (seed, temperature, tokens)
            cut.append((seed, temperature, text))
            continue
        try:
            check_json(text, schema_for(seed))
        except AssertionError as exc:
            failures.append((seed, temperature, text, str(exc)[:300]))
    longest = max(r[4] for r in results)
    print(f"{len(results)} replies to {NUM_SCHEMAS} schemas: {len(failures)} invalid, {len(cut)} cut by max_tokens, "
          f"the longest that ended {max((r[4] for r in results if r[2] == 'stop'), default=0)} tokens ({longest=})")
    assert not failures, f"{len(failures)} replies did not validate: {failures[:5]}"
    assert len(cut) <= MAX_CUT, f"{len(cut)} replies ran to max_tokens={MAX_TOKENS}: {cut[:3]}"


def test_a_pydantic_model_through_the_clients_parse_helper(client):
    class City(BaseModel):
        name: str = Field(max_length=12)
        population: int = Field(ge=0, le=50_000_000)
        capital: bool

    r = client.chat.completions.parse(model=SMOL, messages=[{"role": "user", "content": "Describe Paris."}],
                                      response_format=City, max_tokens=MAX_TOKENS, temperature=0)
    (choice,) = r.choices
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    check_json(choice.message.content, City.model_json_schema() | {"additionalProperties": False})


# -- the other constraint kinds -----------------------------------------------------------------------------

def test_json_object_is_any_json_object(client):
    for extra in ({"response_format": {"type": "json_object"}},
                  {"extra_body": {"structured_outputs": {"json_object": True}}}):
        r = ask(client, "Describe a cat as JSON.", **extra, max_tokens=128)
        (choice,) = r.choices
        if choice.finish_reason == "stop":      # any object: it may be long, but one that ended is whole
            assert isinstance(loads(choice.message.content), dict)
            assert not free_whitespace(choice.message.content)
        else:
            assert choice.message.content.startswith("{")


def test_response_format_text_constrains_nothing(client):
    plain = ask(client, "Say hello.", max_tokens=16)
    text = ask(client, "Say hello.", max_tokens=16, response_format={"type": "text"})
    assert text.choices[0].message.content == plain.choices[0].message.content


@pytest.mark.parametrize("field", ["structured_outputs", "guided_regex"])
def test_regex(client, field):
    pattern = r"[A-Z]{2}-\d{3}-(red|blue)"
    body = {"structured_outputs": {"regex": pattern}} if field == "structured_outputs" else {"guided_regex": pattern}
    for temperature in (0.0, 1.0):
        r = ask(client, "Give me a code.", extra_body=body, temperature=temperature, seed=7)
        assert r.choices[0].finish_reason == "stop"
        assert re.fullmatch(pattern, r.choices[0].message.content), r.choices[0].message.content


@pytest.mark.parametrize("field", ["structured_outputs", "guided_choice"])
def test_choice(client, field):
    options = ["sunny", "rainy", "partly cloudy", "snow"]
    body = {"structured_outputs": {"choice": options}} if field == "structured_outputs" else {"guided_choice": options}
    seen = set()
    for seed in range(4):
        r = ask(client, "What is the weather like?", extra_body=body, temperature=1.0, seed=seed)
        assert r.choices[0].finish_reason == "stop"
        seen.add(r.choices[0].message.content)
    assert seen <= set(options), seen


@pytest.mark.parametrize("field", ["structured_outputs", "guided_grammar"])
def test_ebnf_grammar(client, field):
    grammar = ('root ::= greeting ", " name "!"\n'
               'greeting ::= "hello" | "hi" | "good morning"\n'
               'name ::= [A-Z] [a-z] [a-z]? [a-z]? [a-z]?')
    body = {"structured_outputs": {"grammar": grammar}} if field == "structured_outputs" \
        else {"guided_grammar": grammar}
    for temperature in (0.0, 1.0):
        r = ask(client, "Greet someone.", extra_body=body, temperature=temperature, seed=3)
        assert r.choices[0].finish_reason == "stop"
        assert re.fullmatch(r"(hello|hi|good morning), [A-Z][a-z]{1,4}!", r.choices[0].message.content), \
            r.choices[0].message.content


@pytest.mark.parametrize("field", ["guided_json", "structured_outputs"])
def test_guided_json_as_object_and_as_text(client, field):
    for schema in (PERSON, json.dumps(PERSON)):
        body = {"guided_json": schema} if field == "guided_json" else {"structured_outputs": {"json": schema}}
        r = ask(client, "Describe a person.", extra_body=body)
        assert r.choices[0].finish_reason == "stop"
        check_json(r.choices[0].message.content, PERSON)


# -- errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, param", [
    ({"response_format": json_format({"type": "object", "properties": {"a": {"type": "nonsense"}}})},
     "response_format"),
    ({"response_format": json_format({"type": "object", "properties": {"a": {"type": "integer", "minimum": 5,
                                                                             "maximum": 1}}})}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema"),
    ({"extra_body": {"guided_json": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}, "guided_json"),
    ({"extra_body": {"guided_json": "{not json"}}, "guided_json"),
    ({"extra_body": {"structured_outputs": {"regex": "(((("}}}, "structured_outputs"),
    ({"extra_body": {"structured_outputs": {"grammar": "root ::= undefined_rule"}}}, "structured_outputs"),
    ({"extra_body": {"guided_choice": []}}, "guided_choice"),
    ({"extra_body": {"structured_outputs": {"regex": "a", "choice": ["a"]}}}, "structured_outputs"),
    ({"response_format": {"type": "json_object"}, "extra_body": {"guided_regex": "a+"}}, "guided_regex"),
])
def test_a_bad_constraint_is_a_400_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "Hi.", max_tokens=8, **extra)
    assert caught.value.status_code == 400
    assert caught.value.param == param, caught.value.body
    assert caught.value.type == "invalid_request_error"


def test_the_server_still_serves_after_bad_schemas(client):
    r = ask(client, "Describe a person.", response_format=json_format(PERSON))
    check_json(r.choices[0].message.content, PERSON)


# -- n, streaming, logprobs, completions --------------------------------------------------------------------

def test_n_2_with_a_schema(client):
    r = ask(client, "Describe a person.", response_format=json_format(PERSON), n=2, temperature=1.0, seed=11)
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert c.finish_reason == "stop", c
        check_json(c.message.content, PERSON)
    assert r.usage.completion_tokens > 0


@pytest.mark.parametrize("seed", [0, 5, 17, 42])
def test_a_stream_with_a_schema_concatenates_to_the_same_valid_json(client, seed):
    schema = schema_for(seed)
    fmt = json_format(schema)
    whole = ask(client, describe(schema), response_format=fmt)
    stream = ask(client, describe(schema), response_format=fmt, stream=True,
                 stream_options={"include_usage": True})
    pieces, finishes, usage = [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finishes.append(c.finish_reason)
    text = "".join(pieces)
    assert finishes == ["stop"]
    assert text == whole.choices[0].message.content          # greedy: the same reply, streamed or not
    check_json(text, schema)
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_logprobs_with_a_schema(client):
    r = ask(client, "Describe a person.", response_format=json_format(PERSON), logprobs=True, top_logprobs=3)
    (choice,) = r.choices
    check_json(choice.message.content, PERSON)
    entries = choice.logprobs.content
    assert len(entries) == r.usage.completion_tokens
    text = "".join(e.token for e in entries)
    assert text.startswith(choice.message.content), (text, choice.message.content)
    assert len(text) - len(choice.message.content) <= len("<|im_end|>")      # at most the end-of-turn token
    for e in entries:
        assert e.logprob <= 0 and e.logprob == e.logprob                       # a log probability, not NaN
        assert len(e.top_logprobs) == 3
        assert all(t.logprob <= 0 for t in e.top_logprobs)
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)


def test_completions_with_a_list_of_prompts_and_a_schema(client):
    prompts = ["A person as JSON: ", "Another person, in JSON: ", "JSON for a person: "]
    for body in ({"response_format": json_format(PERSON)}, {"guided_json": PERSON},
                 {"structured_outputs": {"json": PERSON}}):
        r = client.completions.create(model=SMOL, prompt=prompts, max_tokens=MAX_TOKENS, temperature=0,
                                      extra_body=body)
        assert sorted(c.index for c in r.choices) == [0, 1, 2]
        for c in r.choices:
            assert c.finish_reason == "stop", c
            check_json(c.text, PERSON)


def test_completions_stream_with_a_regex_and_echo(client):
    pattern = r"\d{4}-\d{2}-\d{2}"
    prompt = "Today's date is "
    r = client.completions.create(model=SMOL, prompt=prompt, max_tokens=32, temperature=0, echo=True,
                                  extra_body={"guided_regex": pattern})
    assert r.choices[0].text.startswith(prompt)
    assert re.fullmatch(pattern, r.choices[0].text[len(prompt):]), r.choices[0].text
    stream = client.completions.create(model=SMOL, prompt=prompt, max_tokens=32, temperature=0, stream=True,
                                       extra_body={"guided_regex": pattern})
    assert "".join(c.choices[0].text for c in stream if c.choices) == r.choices[0].text[len(prompt):]
