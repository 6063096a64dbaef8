"""Replay: a cached reply as the client of a hit gets it (plain JSON or an OpenAI SSE stream), and
`collect_stream`, the reply a streamed miss made (so it can fill the cache). Pure: ids and times are given.

A hit keeps the stored text, tool calls, finish reason and usage; its `id` and `created` are new, and
`usage.device_seconds` (infercloud's extra) is 0: no device ran. A stream is what a worker sends:
chat: a role chunk, the content in pieces of about PIECE_CHARS characters (cut after whitespace), each
tool call as a chunk with its id and name and then its arguments in pieces, a chunk with the finish
reason, a usage chunk (`choices: []`) only when `stream_options.include_usage` asks (as OpenAI does),
and `data: [DONE]`. Text completions the same without role or tool calls (object `text_completion`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable

from infercloud.cache.store import CachedReply, storable
from infercloud.openai.sse import sse_done, sse_event

PIECE_CHARS = 24
_WORDS = re.compile(r"\S+\s*|\s+")


class IncompleteStream(ValueError):
    """The chunks do not make one finished choice with usage: nothing to cache."""


def pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """`text` cut into pieces of at least `size` characters (the last may be shorter), each ending after
    whitespace where the text has any; joined they are `text`."""
    out: list[str] = []
    for word in _WORDS.findall(text):
        if out and len(out[-1]) < size:
            out[-1] += word
        else:
            out.append(word)
    return out


def _usage(reply: CachedReply) -> dict | None:
    usage = copy.deepcopy(reply.usage)
    if usage is not None and "device_seconds" in usage:
        usage["device_seconds"] = 0.0
    return usage


def replay_json(reply: CachedReply, response_id: str, created: int) -> dict:
    """The non-streamed answer of a hit: the stored object with a new id and created time."""
    body = copy.deepcopy(reply.body)
    body.update(id=response_id, created=created)
    if "usage" in body:
        body["usage"] = _usage(reply)
    return body


def replay_chunks(reply: CachedReply, response_id: str, created: int, include_usage: bool) -> list[dict]:
    """The parsed chunks of a hit's stream (without [DONE])."""
    body = reply.body
    head = {"id": response_id, "object": "chat.completion.chunk" if reply.is_chat else "text_completion",
            "created": created, "model": body.get("model")}
    head.update({k: body[k] for k in ("system_fingerprint", "service_tier") if body.get(k) is not None})
    choice = reply.choice

    def chunk(delta: dict | str, finish_reason: str | None = None) -> dict:
        part = {"index": 0, "delta" if reply.is_chat else "text": delta, "logprobs": None,
                "finish_reason": finish_reason}
        return {**head, "choices": [part]}

    if reply.is_chat:
        message = choice.get("message") or {}
        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": p}) for p in pieces(message.get("content") or "")]
        for index, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            chunks.append(chunk({"tool_calls": [{"index": index, "id": call.get("id"), "type": "function",
                                                 "function": {"name": function.get("name"), "arguments": ""}}]}))
            chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
                       for p in pieces(function.get("arguments") or "")]
        chunks.append(chunk({}, choice.get("finish_reason")))
    else:
        chunks = [chunk(p) for p in pieces(choice.get("text") or "")]
        chunks.append(chunk("", choice.get("finish_reason")))
    if include_usage and reply.usage is not None:
        chunks.append({**head, "choices": [], "usage": _usage(reply)})
    return chunks


def replay_sse(reply: CachedReply, response_id: str, created: int, include_usage: bool) -> list[str]:
    """The SSE events of a hit's stream, `data: [DONE]` last."""
    return [sse_event(c) for c in replay_chunks(reply, response_id, created, include_usage)] + [sse_done()]


def wants_usage(body: dict) -> bool:
    """Whether a stream request asks for the usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def collect_stream(chunks: Iterable[dict], created_at: float) -> CachedReply:
    """The non-streamed answer a stream's parsed chunks add up to: content deltas joined, tool-call deltas
    merged by index, the finish reason, the last usage seen. IncompleteStream unless it is one finished
    choice with usage (see store.storable)."""
    head: dict = {}
    text: list[str] = []
    calls: dict[int, dict] = {}
    finish_reason, usage, is_chat = None, None, True
    for c in chunks:
        if isinstance(c.get("error"), dict):
            raise IncompleteStream("the stream ended in an error")
        head = head or {k: c[k] for k in ("id", "created", "model", "system_fingerprint", "service_tier") if k in c}
        is_chat = c.get("object", "chat.completion.chunk") == "chat.completion.chunk"
        usage = c["usage"] if isinstance(c.get("usage"), dict) else usage
        for choice in c.get("choices") or []:
            if choice.get("index", 0) != 0:
                raise IncompleteStream("a stream of several choices is not cached")
            delta = choice.get("delta") if is_chat else {"content": choice.get("text")}
            text.append((delta or {}).get("content") or "")
            for call in (delta or {}).get("tool_calls") or []:
                _merge_call(calls.setdefault(call.get("index", 0), {}), call)
            finish_reason = choice.get("finish_reason") or finish_reason
    if is_chat:
        message: dict = {"role": "assistant", "content": "".join(text) or (None if calls else "")}
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": "".join(text), "logprobs": None, "finish_reason": finish_reason}
    body = {**head, "object": "chat.completion" if is_chat else "text_completion", "choices": [choice],
            "usage": usage}
    if not storable(body):
        raise IncompleteStream("the stream did not finish one choice with its usage")
    return CachedReply(body, created_at)


def _merge_call(into: dict, delta: dict) -> None:
    """One tool-call delta into the call so far: id, type and name as first given, arguments appended."""
    for key in ("id", "type"):
        if delta.get(key) and not into.get(key):
            into[key] = delta[key]
    function = delta.get("function") or {}
    merged = into.setdefault("function", {"name": "", "arguments": ""})
    if function.get("name") and not merged["name"]:
        merged["name"] = function["name"]
    merged["arguments"] += function.get("arguments") or ""
    into.setdefault("type", "function")
