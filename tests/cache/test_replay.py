"""Replay: a hit's stream, read by the official openai client's own stream parser, is a valid stream with
the stored text, tool calls and usage; plain hits parse as completions; collect_stream rebuilds the answer
of a stream (so a streamed miss fills the cache)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from infercloud.cache.replay import (
    IncompleteStream,
    collect_stream,
    pieces,
    replay_chunks,
    replay_json,
    replay_sse,
)
from tests.cache.conftest import MODEL, chat_reply, text_reply

CALLS = [{"id": "call_a", "type": "function", "function": {"name": "get_weather",
                                                           "arguments": "{\"city\": \"Paris\", \"unit\": \"C\"}"}},
         {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]
LONG = "Paris is the capital of France. It lies on the Seine, and about 2.1 million people live there. 🇫🇷"


def _client(payload: bytes, content_type: str) -> openai.OpenAI:
    """An OpenAI client whose server answers `payload` (bytes made by replay, carried as they are)."""
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=payload)

    return openai.OpenAI(api_key="sk-test", base_url="http://cache.test/v1",
                         http_client=httpx.Client(transport=httpx.MockTransport(answer)))


def _sse(events: list[str]) -> openai.OpenAI:
    return _client("".join(events).encode(), "text/event-stream")


def _stream_chat(reply, include_usage: bool):
    client = _sse(replay_sse(reply, "chatcmpl-hit1", 1800000000, include_usage))
    return list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}],
                                               stream=True, stream_options={"include_usage": include_usage}))


def test_a_replayed_chat_stream_is_read_by_openai_with_the_same_text_and_usage():
    reply = chat_reply(LONG)
    chunks = _stream_chat(reply, include_usage=True)
    assert {c.id for c in chunks} == {"chatcmpl-hit1"} and all(c.created == 1800000000 for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == LONG
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3   # a few pieces
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 21
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-1].usage.total_tokens == 29


def test_usage_chunk_only_when_asked():
    chunks = _stream_chat(chat_reply(), include_usage=False)
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_tool_calls_are_streamed_as_openai_deltas():
    reply = chat_reply(None, tool_calls=CALLS, finish_reason="tool_calls")
    calls: dict[int, dict] = {}
    for chunk in _stream_chat(reply, include_usage=True):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or delta.id
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert [calls[i] for i in sorted(calls)] == [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in CALLS]


def test_a_replayed_text_completion_stream_is_read_by_openai():
    reply = text_reply(LONG)
    client = _sse(replay_sse(reply, "cmpl-hit2", 1800000000, include_usage=True))
    chunks = list(client.completions.create(model=MODEL, prompt="x", stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == LONG
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.total_tokens == 10 and {c.id for c in chunks} == {"cmpl-hit2"}


def test_a_plain_hit_has_a_fresh_id_the_same_text_and_usage_and_no_device_seconds():
    reply = chat_reply(LONG)
    body = replay_json(reply, "chatcmpl-hit3", 1800000000)
    completion = _client(json.dumps(body).encode(), "application/json").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "q"}])
    assert completion.id == "chatcmpl-hit3" and completion.created == 1800000000
    assert completion.choices[0].message.content == LONG
    assert completion.usage.total_tokens == 29 and body["usage"]["device_seconds"] == 0.0
    assert reply.body["id"] == "chatcmpl-original" and reply.usage["device_seconds"] == 0.042   # untouched


@pytest.mark.parametrize("reply", [chat_reply(LONG), chat_reply(None, CALLS, "tool_calls"),
                                   chat_reply("Let me check.", CALLS[:1], "tool_calls"), text_reply(LONG)],
                         ids=["text", "tool-calls", "text-and-call", "completion"])
def test_collect_stream_rebuilds_the_answer_a_stream_made(reply):
    collected = collect_stream(replay_chunks(reply, "id-1", 1800000000, include_usage=True), created_at=5.0)
    expected = replay_json(reply, "id-1", 1800000000)
    assert collected.body == expected and collected.created_at == 5.0


def test_collect_stream_of_a_worker_stream_with_usage_on_every_chunk():
    head = {"id": "chatcmpl-w", "object": "chat.completion.chunk", "created": 1, "model": MODEL}

    def chunk(delta, finish=None, completion_tokens=0):
        usage = {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 5 + completion_tokens}
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                "usage": usage}

    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}, None, 1),
              chunk({"content": "lo"}, None, 2), chunk({}, "stop", 2)]
    reply = collect_stream(chunks, created_at=1.0)
    assert reply.choice["message"] == {"role": "assistant", "content": "Hello"}
    assert reply.usage["completion_tokens"] == 2 and reply.body["id"] == "chatcmpl-w"


def test_collect_stream_refuses_what_cannot_be_replayed():
    full = replay_chunks(chat_reply(), "id", 1, include_usage=True)
    unfinished = [c for c in full if not (c["choices"] and c["choices"][0]["finish_reason"])]
    two_choices = [*full[:1], {**full[1], "choices": [{**full[1]["choices"][0], "index": 1}]}, *full[2:]]
    for chunks in (full[:-1], unfinished, two_choices, [*full[:2], {"error": {"message": "boom"}}]):
        with pytest.raises(IncompleteStream):
            collect_stream(chunks, created_at=1.0)


@pytest.mark.parametrize("text", ["", "x", "  leading and trailing  ", "one\n\ntwo\tthree", LONG * 3])
def test_pieces_join_back(text):
    parts = pieces(text)
    assert "".join(parts) == text and all(parts)
    assert all(len(p) >= 24 for p in parts[:-1])
