"""Small factories for evaluation tests: chat answers as the gateway relays them, and Samples."""

from __future__ import annotations

import datetime as dt

from infercloud.evaluation.sample import Sample, sample_from_chat

AT = dt.datetime(2026, 11, 1, 10, 0)


def chat_answer(content: str | None = "Paris is the capital of France.", tool_calls: list | None = None,
                finish_reason: str = "stop", model: str = "chat-a", sources: list | None = None) -> dict:
    message = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": name, "arguments": arguments}}
                                 for i, (name, arguments) in enumerate(tool_calls)]
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
              "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
              "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}}
    if sources is not None:
        answer["infercloud"] = {"pipeline": "rag", "sources": sources, "stages": [], "checks": []}
    return answer


def make_sample(content: str | None = "Paris is the capital of France.", request: dict | None = None,
                target: str = "chat-a", request_id: str = "req-1", tenant_id: int | None = 7,
                at: dt.datetime = AT, **answer) -> Sample:
    request = request if request is not None else {"model": target, "messages": [
        {"role": "user", "content": "What is the capital of France?"}]}
    return sample_from_chat(target, request, chat_answer(content, **answer), tenant_id, request_id, at)
