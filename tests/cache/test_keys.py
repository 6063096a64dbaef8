"""Cache keys: every field that can change the answer changes the exact key, delivery fields do not;
what is cacheable; the semantic key's context hash and last user turn; Cache-Control."""

from __future__ import annotations

import pytest

from infercloud.cache.keys import (
    COMPLETIONS_PATH,
    exact_key,
    is_cacheable,
    may_store,
    semantic_parts,
    wants_cache,
)
from tests.cache.conftest import MODEL, chat_body

NS = "tenant:acme"
BASE = exact_key(NS, MODEL, chat_body())

CHANGES = {   # each one changes what the model answers, so each is another key
    "temperature": {"temperature": 0.5},
    "max_tokens": {"max_tokens": 65},
    "max_completion_tokens": {"max_completion_tokens": 64},
    "seed": {"seed": 7},
    "top_p": {"top_p": 0.9},
    "top_k": {"top_k": 5},
    "stop": {"stop": ["."]},
    "presence_penalty": {"presence_penalty": 0.5},
    "logit_bias": {"logit_bias": {"42": 5.0}},
    "tools": {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]},
    "tool_choice": {"tool_choice": "none"},
    "response_format": {"response_format": {"type": "json_object"}},
    "structured_outputs": {"structured_outputs": {"regex": "[a-z]+"}},
    "cache_salt": {"cache_salt": "client-1"},
    "an unknown field": {"reasoning_effort": "high"},
}


@pytest.mark.parametrize("name", CHANGES)
def test_each_field_that_changes_the_answer_changes_the_key(name):
    assert exact_key(NS, MODEL, chat_body(**CHANGES[name])) != BASE


@pytest.mark.parametrize("edit", ["system", "question", "role", "name", "history", "parts"])
def test_any_message_change_changes_the_key(edit):
    body = chat_body()
    messages = body["messages"]
    if edit == "system":
        messages[0]["content"] = "You are verbose."
    elif edit == "question":
        messages[-1]["content"] = "What is the capital of France ?"
    elif edit == "role":
        messages[0]["role"] = "developer"
    elif edit == "name":
        messages[-1]["name"] = "bob"
    elif edit == "history":
        messages.insert(1, {"role": "user", "content": "hi"})
    else:
        messages[-1]["content"] = [{"type": "text", "text": messages[-1]["content"]}]
    assert exact_key(NS, MODEL, body) != BASE


def test_namespace_model_path_and_settled_max_tokens_are_in_the_key():
    body = chat_body()
    assert exact_key("tenant:other", MODEL, body) != BASE
    assert exact_key(NS, "other-model", body) != BASE
    assert exact_key(NS, MODEL, body, path=COMPLETIONS_PATH) != BASE
    assert exact_key(NS, MODEL, body, max_new_tokens=64) != BASE        # a cap settled by the gateway counts
    assert exact_key(NS, MODEL, body, max_new_tokens=64) == exact_key(NS, MODEL, chat_body(), max_new_tokens=64)


@pytest.mark.parametrize("fields", [
    {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}, {"user": "u-123"},
    {"metadata": {"trace": "x"}}, {"store": True}, {"service_tier": "flex"}, {"priority": -5},
    {"seed": None}, {"n": 1}, {"temperature": 0.0},
])
def test_delivery_fields_nulls_and_equal_numbers_keep_the_key(fields):
    assert exact_key(NS, MODEL, chat_body(**fields)) == BASE


def test_key_is_independent_of_field_order():
    body = chat_body()
    assert exact_key(NS, MODEL, dict(reversed(list(body.items())))) == BASE


@pytest.mark.parametrize("body, path, allowed, expected", [
    (chat_body(), None, False, True),
    (chat_body(seed=3, temperature=0.8), None, False, True),          # a seed: reproducible
    (chat_body(temperature=0.8), None, False, False),
    (chat_body(temperature=0.8), None, True, True),                   # configured to cache those too
    ({**chat_body(), "temperature": None}, None, False, False),       # the default temperature is 1
    (chat_body(n=2), None, True, False),
    (chat_body(n=1), None, False, True),
    (chat_body(logprobs=True), None, False, False),
    (chat_body(top_logprobs=2), None, False, False),
    (chat_body(return_token_ids=True), None, False, False),
    (chat_body(resume_token_ids=[1, 2]), None, False, False),
    ({"model": MODEL, "messages": [], "temperature": 0}, None, False, False),
    ({"model": MODEL, "prompt": "The quick brown fox", "temperature": 0}, COMPLETIONS_PATH, False, True),
    ({"model": MODEL, "prompt": [1, 2, 3], "temperature": 0}, COMPLETIONS_PATH, False, True),
    ({"model": MODEL, "prompt": ["one"], "temperature": 0}, COMPLETIONS_PATH, False, True),
    ({"model": MODEL, "prompt": ["one", "two"], "temperature": 0}, COMPLETIONS_PATH, False, False),
    ({"model": MODEL, "prompt": "x", "temperature": 0, "logprobs": 2}, COMPLETIONS_PATH, False, False),
    ({"model": MODEL, "input": "x"}, "/v1/embeddings", True, False),
])
def test_is_cacheable(body, path, allowed, expected):
    assert is_cacheable(body, allowed, path or "/v1/chat/completions") is expected


def test_semantic_parts_split_the_last_user_turn_from_its_context():
    context, text = semantic_parts(chat_body("What is the capital of France?"), MODEL)
    assert text == "What is the capital of France?"
    assert semantic_parts(chat_body("Which city is France's capital?"), MODEL)[0] == context   # same context
    assert semantic_parts(chat_body(stream=True, user="u"), MODEL)[0] == context
    history = [{"role": "user", "content": "Let's talk about Germany."}, {"role": "assistant", "content": "Sure."}]
    different = [chat_body(history=history), chat_body(max_tokens=10), chat_body(seed=1), chat_body(top_p=0.5),
                 chat_body(response_format={"type": "json_object"}),
                 chat_body(tools=[{"type": "function", "function": {"name": "f"}}])]
    assert all(semantic_parts(body, MODEL)[0] != context for body in different)
    assert semantic_parts(chat_body(), "other-model")[0] != context
    assert semantic_parts(chat_body(), MODEL, max_new_tokens=32)[0] != context
    named = chat_body()
    named["messages"][-1]["name"] = "bob"
    assert semantic_parts(named, MODEL)[0] != context


def test_semantic_parts_only_for_a_last_text_user_turn():
    parts = chat_body()
    parts["messages"][-1]["content"] = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    assert semantic_parts(parts, MODEL)[1] == "Hello\nthere"
    image = chat_body()
    image["messages"][-1]["content"] = [{"type": "image_url", "image_url": {"url": "x"}}]
    assistant_last = chat_body(history=[])
    assistant_last["messages"].append({"role": "assistant", "content": "Paris"})
    for body in (image, assistant_last, chat_body(""), {"model": MODEL, "prompt": "x"}):
        assert semantic_parts(body, MODEL) is None
    assert semantic_parts(chat_body(), MODEL, path=COMPLETIONS_PATH) is None


@pytest.mark.parametrize("headers, read, write", [
    ({}, True, True),
    ({"Cache-Control": "no-cache"}, False, True),
    ({"cache-control": "max-age=0, No-Store"}, False, False),
    ({"CACHE-CONTROL": "no-transform"}, True, True),
    ({"x-other": "no-cache"}, True, True),
])
def test_cache_control(headers, read, write):
    assert wants_cache(headers) is read
    assert may_store(headers) is write
