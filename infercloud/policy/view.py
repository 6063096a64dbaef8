"""Typed views of a request and a reply: what the policy rules read, taken from an OpenAI body once.

RequestView: the request's texts with where each sits in the body (a message's content or its text parts,
a completion's prompt, an embeddings input), the function names it offers (`tools`), and the conversation
it carries (user turns, tool calls in the history). ReplyView: each choice's text and tool calls, for a
chat completion or a text completion. `with_texts` and `without_tools` return edited copies of a body (a
redacted or stripped request); the body handed in is never changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

Where = tuple[str | int, ...]        # a path into the body: ("messages", 1, "content")


def label(where: Where) -> str:
    """("messages", 1, "content") -> "messages[1].content"."""
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True)
class RequestView:
    texts: tuple[tuple[Where, str], ...] = ()
    tools: tuple[str, ...] = ()          # offered function names, in order
    turns: int = 0                       # user messages (a prompt or input: 1)
    tool_calls: int = 0                  # calls the assistant made earlier in the conversation


@dataclass(frozen=True)
class ReplyView:
    texts: tuple[tuple[Where, str], ...] = ()
    calls: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = ()   # (choice, ((name, arguments), ...))


def request_view(body: dict) -> RequestView:
    texts: list[tuple[Where, str]] = []
    turns = calls = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                continue
            turns += m.get("role") == "user"
            history_calls = m.get("tool_calls")
            calls += len(history_calls) if isinstance(history_calls, list) else 0
            texts += _content(("messages", i, "content"), m.get("content"))
    for name in ("prompt", "input"):
        value = body.get(name)
        if isinstance(value, str):
            texts.append(((name,), value))
            turns += 1
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            texts += [((name, i), v) for i, v in enumerate(value)]
            turns += 1
    return RequestView(tuple(texts), _tool_names(body.get("tools")), turns, calls)


def _content(where: Where, content) -> list[tuple[Where, str]]:
    if isinstance(content, str):
        return [(where, content)]
    if isinstance(content, list):
        return [((*where, j, "text"), part["text"]) for j, part in enumerate(content)
                if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return []


def _tool_names(tools) -> tuple[str, ...]:
    if not isinstance(tools, list):
        return ()
    names = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        names.append(name if isinstance(name, str) else "")
    return tuple(names)


def reply_view(answer: dict) -> ReplyView:
    """A chat.completion's or text_completion's choices."""
    texts: list[tuple[Where, str]] = []
    calls = []
    for i, choice in enumerate(answer.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                texts.append((("choices", i, "message", "content"), message["content"]))
            if isinstance(message.get("tool_calls"), list):
                calls.append((i, tuple(call_of(c) for c in message["tool_calls"])))
        elif isinstance(choice.get("text"), str):
            texts.append((("choices", i, "text"), choice["text"]))
    return ReplyView(tuple(texts), tuple(calls))


def call_of(call) -> tuple[str, str]:
    """(name, arguments as JSON text) of an OpenAI tool call."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return "", ""
    name, arguments = function.get("name"), function.get("arguments")
    return (name if isinstance(name, str) else "", arguments if isinstance(arguments, str) else "")


def with_texts(body: dict, texts: dict[Where, str]) -> dict:
    """A copy of `body` with the texts at these places replaced."""
    out = copy.deepcopy(body)
    for where, text in texts.items():
        node = out
        for part in where[:-1]:
            node = node[part]
        node[where[-1]] = text
    return out


def without_tools(body: dict, keep: list) -> dict:
    """A copy of `body` offering only `keep` (none left: no `tools`, `tool_choice` or `parallel_tool_calls`)."""
    out = dict(body)
    if keep:
        out["tools"] = keep
        choice = out.get("tool_choice")
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        if named is not None and named not in _tool_names(keep):
            out.pop("tool_choice")
    else:
        for name in ("tools", "tool_choice", "parallel_tool_calls"):
            out.pop(name, None)
    return out
