"""Chat completion SSE chunks -> the Responses API's event stream (pure: no I/O).

Events, as OpenAI sends them, each with `type` and a rising `sequence_number` from 0:
`response.created`, `response.in_progress`; per text item `response.output_item.added`,
`response.content_part.added`, `response.output_text.delta`..., `response.output_text.done`,
`response.content_part.done`, `response.output_item.done`; per function call `response.output_item.added`,
`response.function_call_arguments.delta`..., `response.function_call_arguments.done`,
`response.output_item.done`; and last `response.completed` (or `response.incomplete` when the output hit
max_output_tokens, or `response.failed` when the chat stream broke) carrying the whole response.
"""

from __future__ import annotations

import copy
import json

from infercloud.openai.responses import ResponsesRequest
from infercloud.responses.translate import (function_call_item, message_item, new_id, response_object,
                                            usage_from_chat)

FINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


def sse(event: dict) -> str:
    """One event as SSE: `event: <type>` and `data: <json>`."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


class StreamFailed(Exception):
    """The chat stream ended in an error event, or before its end."""


class StreamTranslator:
    """Feeds on chat chunks (parsed JSON) and returns the Responses events each one makes."""

    def __init__(self, response_id: str, body: ResponsesRequest, created_at: int):
        self.response_id = response_id
        self.body = body
        self.created_at = created_at
        self.sequence = 0
        self.output: list[dict] = []
        self.message: dict | None = None      # the text item being streamed, if any
        self.calls: dict[int, dict] = {}      # tool-call index -> its function_call item, while open
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.service_tier: str | None = None

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _response(self, status: str, usage: dict | None = None, error: dict | None = None) -> dict:
        return response_object(self.response_id, self.body, self.created_at, status, copy.deepcopy(self.output),
                               usage, service_tier=self.service_tier, error=error)

    def start(self) -> list[dict]:
        created = self._response("in_progress")
        return [self._event("response.created", response=created),
                self._event("response.in_progress", response=copy.deepcopy(created))]

    def feed(self, chunk: dict) -> list[dict]:
        if isinstance(chunk.get("error"), dict):
            raise StreamFailed(str(chunk["error"].get("message") or "the chat stream failed"))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("service_tier"), str):
            self.service_tier = chunk["service_tier"]
        events: list[dict] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                events += self._text(delta["content"])
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    events += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _open_message(self) -> list[dict]:
        item = message_item(new_id("msg"), "", "in_progress")
        item["content"] = []
        self.message = item
        self.output.append(item)
        index = len(self.output) - 1
        added = self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item))
        item["content"].append({"type": "output_text", "text": "", "annotations": []})
        return [added, self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                   content_index=0, part={"type": "output_text", "text": "", "annotations": []})]

    def _text(self, delta: str) -> list[dict]:
        events = self._open_message() if self.message is None else []
        item = self.message
        item["content"][0]["text"] += delta
        events.append(self._event("response.output_text.delta", item_id=item["id"], output_index=self._index(item),
                                  content_index=0, delta=delta, logprobs=[]))
        return events

    def _index(self, item: dict) -> int:
        return next(i for i, other in enumerate(self.output) if other is item)

    def _close_message(self, status: str) -> list[dict]:
        item, self.message = self.message, None
        if item is None:
            return []
        index = self._index(item)
        part = item["content"][0]
        item["status"] = status
        return [self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                            text=part["text"], logprobs=[]),
                self._event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                            part=copy.deepcopy(part)),
                self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item))]

    def _tool_call(self, call: dict) -> list[dict]:
        index = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        events = []
        if index not in self.calls:
            events += self._close_message("completed")   # the text before a call is complete
            item = function_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name") or "",
                                      "", "in_progress")
            self.calls[index] = item
            self.output.append(item)
            events.append(self._event("response.output_item.added", output_index=len(self.output) - 1,
                                      item=copy.deepcopy(item)))
        item = self.calls[index]
        if isinstance(function.get("arguments"), str) and function["arguments"]:
            item["arguments"] += function["arguments"]
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=self._index(item), delta=function["arguments"]))
        return events

    def _close_calls(self) -> list[dict]:
        events = []
        for item in self.calls.values():
            index = self._index(item)
            item["status"] = "completed"
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                      arguments=item["arguments"]))
            events.append(self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)))
        self.calls = {}
        return events

    def finish(self) -> tuple[list[dict], dict]:
        """The chat stream ended well: the events that close the open items, and the final response (sent
        with `final_event` once it is stored)."""
        status = "incomplete" if self.finish_reason == "length" else "completed"
        events = []
        if not self.output:   # no text and no call: an empty message, as a plain response has
            events += self._open_message()
        events += self._close_message(status) + self._close_calls()
        return events, self._response(status, usage_from_chat(self.usage))

    def fail(self, message: str) -> list[dict]:
        """The chat stream broke: `response.failed` with what was made so far."""
        error = {"code": "server_error", "message": message}
        return [self._event("response.failed", response=self._response("failed", usage_from_chat(self.usage),
                                                                        error))]

    def final_event(self, response: dict) -> dict:
        return self._event(FINAL_EVENTS[response["status"]], response=response)
