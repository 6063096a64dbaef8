"""Sample: one answer as the evaluators read it, and how it is built from a chat or text completion's JSON.

`sample_from_chat` reads the first choice only (an `n > 1` request is scored on its first answer):
`message.content` (a chat completion; a list of content parts is joined by their text) or `text` (a
text completion), `message.tool_calls` as (name, arguments JSON text) pairs, `finish_reason` and
`usage`. A pipeline's answer carries its retrieved passages in `infercloud.sources[*].text`
(pipelines/runner.py `report()`); they become `passages`, empty for a plain model's answer. The answer
is read defensively: a field missing or of the wrong type reads as absent, never as an error.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    target: str                              # the spec's target: a served model or a pipeline
    model: str                               # the model the answer names (a pipeline's answer: the pipeline)
    tenant_id: int | None
    request_id: str
    request: dict                            # the chat/completions request body
    text: str                                # the answer's content ("" when it has none)
    tool_calls: tuple[tuple[str, str], ...]  # (function name, arguments as JSON text)
    finish_reason: str | None
    usage: dict | None
    passages: tuple[str, ...]                # a pipeline answer's retrieved passages; empty otherwise
    at: dt.datetime                          # when the answer was given (naive UTC)


def sample_from_chat(target: str, request_body: dict, answer_json: dict, tenant_id: int | None,
                     request_id: str, at: dt.datetime) -> Sample:
    """The Sample of an OpenAI chat.completion (or text_completion) answer to `request_body`."""
    choice = _first(answer_json.get("choices"))
    message = _dict(choice.get("message"))
    text = _content_text(message.get("content")) if message else _str(choice.get("text"))
    model = answer_json.get("model") or request_body.get("model") or target
    usage = answer_json.get("usage")
    return Sample(target=target, model=str(model), tenant_id=tenant_id, request_id=request_id,
                  request=request_body, text=text, tool_calls=_tool_calls(message.get("tool_calls")),
                  finish_reason=choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
                  usage=usage if isinstance(usage, dict) else None,
                  passages=_passages(_dict(answer_json.get("infercloud")).get("sources")), at=at)


def _first(choices: Any) -> dict:
    return _dict(choices[0]) if isinstance(choices, list) and choices else {}


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _content_text(content: Any) -> str:
    """A message's content: a string, or the text of its parts ({"type": "text", "text": ...})."""
    if isinstance(content, list):
        return "".join(_str(_dict(part).get("text")) for part in content)
    return _str(content)


def _tool_calls(calls: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(calls, list):
        return ()
    functions = (_dict(_dict(call).get("function")) for call in calls)
    return tuple((_str(f.get("name")), _str(f.get("arguments"))) for f in functions)


def _passages(sources: Any) -> tuple[str, ...]:
    if not isinstance(sources, list):
        return ()
    return tuple(text for text in (_str(_dict(s).get("text")) for s in sources) if text)


def question_text(request: dict) -> str:
    """What was asked: the last user message's text (a chat request) or the prompt (a completion request)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if _dict(message).get("role") == "user":
                return _content_text(message.get("content"))
        return ""
    prompt = request.get("prompt")
    if isinstance(prompt, list):
        return "\n".join(p for p in prompt if isinstance(p, str))
    return _str(prompt)
