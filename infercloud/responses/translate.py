"""Responses API <-> chat completions: pure functions, no I/O.

A Responses request becomes one chat completion. Its messages are the conversation so far (the stored
messages of `previous_response_id`: every earlier turn's input and output, without earlier turns'
instructions, as OpenAI does not carry those over), then this request's `instructions` as a system
message, then its input. Function calls become an assistant message with `tool_calls`, function call
outputs `tool` messages. The chat reply becomes a Response object in OpenAI's shape: a `message` item
for the text and a `function_call` item per tool call.

Keeping the earlier turns first means a continuation's prompt starts with the previous prompt and its
answer, so the engine's prefix cache (and prefix-aware routing on a gateway) reuses their KV blocks.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from infercloud.openai.errors import APIError
from infercloud.openai.responses import MessageItem, ResponsesRequest

# chat fields named in a worker's errors -> the Responses field the client sent
_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
           "response_format": "text", "prompt": "input"}


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: `resp_`, `msg_`, `fc_` and 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


# -- input -----------------------------------------------------------------------------------------
def input_items(body: ResponsesRequest) -> list[dict]:
    """The request's input as items with ids (as GET /v1/responses/{id}/input_items lists them)."""
    given = [MessageItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    items = []
    for item in given:
        if item.type == "message":
            kind = "output_text" if item.role == "assistant" else "input_text"
            if isinstance(item.content, str):
                parts = [_part(kind, item.content)]
            else:
                parts = [_part(p.type, p.text) for p in item.content]
            items.append({"type": "message", "id": item.id or new_id("msg"), "role": item.role, "content": parts,
                          "status": item.status or "completed"})
        elif item.type == "function_call":
            items.append({"type": "function_call", "id": item.id or new_id("fc"), "call_id": item.call_id,
                          "name": item.name, "arguments": item.arguments, "status": item.status or "completed"})
        else:
            items.append({"type": "function_call_output", "id": item.id or new_id("fco"), "call_id": item.call_id,
                          "output": item.output, "status": item.status or "completed"})
    return items


def _part(kind: str, text: str) -> dict:
    return {"type": kind, "text": text, "annotations": []} if kind == "output_text" else {"type": kind, "text": text}


def items_to_messages(items: list[dict]) -> list[dict]:
    """Responses items (input or output, as stored) -> chat messages. Function calls join the assistant
    message before them (a reply with text and calls is one assistant turn), or make one of their own."""
    messages: list[dict] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item["role"], "content": "".join(p["text"] for p in item["content"])})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def chat_body(body: ResponsesRequest, history: list[dict], items: list[dict]) -> dict:
    """The chat completion request that serves `body`, after the conversation `history` (chat messages)."""
    messages = list(history)
    if body.instructions is not None:
        messages.append({"role": "system", "content": body.instructions})
    messages += items_to_messages(items)
    chat: dict[str, Any] = {"model": body.model, "messages": messages}
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                         ("user", "user"), ("service_tier", "service_tier"),
                         ("parallel_tool_calls", "parallel_tool_calls")):
        value = getattr(body, ours)
        if value is not None:
            chat[theirs] = value
    if body.tools:
        chat["tools"] = [{"type": "function", "function": {k: v for k, v in t.model_dump(exclude={"type"}).items()
                                                           if v is not None}} for t in body.tools]
    if body.tool_choice is not None:
        chat["tool_choice"] = body.tool_choice if isinstance(body.tool_choice, str) else \
            {"type": "function", "function": {"name": body.tool_choice.name}}
    fmt = body.text.format if body.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema = {k: v for k, v in fmt.model_dump(by_alias=True, exclude={"type"}).items() if v is not None}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    # `text` is the default format: nothing to ask for
    if body.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# -- output ----------------------------------------------------------------------------------------
def message_item(item_id: str, text: str, status: str) -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def output_from_chat(message: dict, finish_reason: str | None) -> list[dict]:
    """A chat reply's message -> output items: its text as a message item (also when empty and there are no
    calls), then one function_call item per tool call."""
    status = "incomplete" if finish_reason == "length" else "completed"
    text = message.get("content") or ""
    calls = message.get("tool_calls") or []
    output = [message_item(new_id("msg"), text, status)] if text or not calls else []
    for call in calls:
        function = call.get("function") or {}
        output.append(function_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name", ""),
                                         function.get("arguments") or "", "completed"))
    return output


def usage_from_chat(usage: dict | None) -> dict | None:
    """Chat usage -> Responses usage (input/output tokens, cached input tokens). `cache_write_tokens` (OpenAI's
    explicit cache writes, which the official client's types require) is 0: the prefix cache is implicit."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


def response_object(response_id: str, body: ResponsesRequest, created_at: int, status: str, output: list[dict],
                    usage: dict | None, *, service_tier: str | None = None, error: dict | None = None) -> dict:
    """A Response in OpenAI's shape (the SDK computes `output_text` from `output`)."""
    fmt = body.text.format if body.text is not None and body.text.format is not None else None
    tool_choice = body.tool_choice if isinstance(body.tool_choice, str) or body.tool_choice is None else \
        body.tool_choice.model_dump()
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "max_tool_calls": None,
        "model": body.model, "output": output,
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id, "reasoning": {"effort": None, "summary": None},
        "service_tier": service_tier or body.service_tier or "auto", "store": body.store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": fmt.model_dump(by_alias=True) if fmt is not None else {"type": "text"}},
        "tool_choice": tool_choice or "auto", "tools": [t.model_dump() for t in body.tools or ()],
        "top_p": 1.0 if body.top_p is None else body.top_p, "truncation": "disabled",
        "usage": usage, "user": body.user, "metadata": dict(body.metadata or {}),
    }


def response_from_chat(response_id: str, body: ResponsesRequest, created_at: int, chat: dict) -> dict:
    """A chat completion (JSON) -> the Response object."""
    choice = (chat.get("choices") or [{}])[0]
    finish_reason = choice.get("finish_reason")
    output = output_from_chat(choice.get("message") or {}, finish_reason)
    status = "incomplete" if finish_reason == "length" else "completed"
    return response_object(response_id, body, created_at, status, output, usage_from_chat(chat.get("usage")),
                           service_tier=chat.get("service_tier"))


def continuation(history: list[dict], items: list[dict], output: list[dict]) -> list[dict]:
    """The chat messages a later turn continues from: the history, this turn's input and its output (this
    turn's instructions are left out: OpenAI does not carry them over)."""
    return [*history, *items_to_messages(items), *items_to_messages(output)]


# -- errors ----------------------------------------------------------------------------------------
def responses_param(param: str | None) -> str | None:
    """The Responses field a chat field of an error stands for."""
    return _PARAMS.get(param, param) if param is not None else None


def map_error(exc: APIError) -> APIError:
    """A chat error, naming the Responses field (`param`) the client sent."""
    exc.param = responses_param(exc.param)
    return exc


def map_error_body(content: bytes) -> bytes:
    """A chat error's JSON body (from a replica), naming the Responses field the client sent."""
    try:
        data = json.loads(content)
        error = data["error"]
        if isinstance(error, dict) and isinstance(error.get("param"), str):
            error["param"] = responses_param(error["param"])
            return json.dumps(data).encode()
    except (ValueError, KeyError, TypeError):
        pass
    return content
