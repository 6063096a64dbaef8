"""ChunkRewriter: turns one stream's upstream SSE lines into the client's events. Pure: no I/O, no clock.

What it does to each `data:` chunk of a chat or text completion stream:
  - token ids: every choice's `token_ids` are added to `delivered` (what a migration resumes from) and
    taken out unless the client asked for them (`return_token_ids`); `prompt_token_ids` reach the client
    once at most (a resumed attempt sends them again);
  - usage: the last usage seen is kept for metering (`usage`); the client gets it only as it asked
    (`stream_options.include_usage` for the final chunk, `continuous_usage_stats` on every chunk), rewritten
    by `bill` to what the client is billed;
  - one stream: the first attempt's `id` stays on every chunk, and each choice's role delta goes out once;
  - chunks that carry nothing for the client (ids only, a repeated role) are dropped;
  - `[DONE]` sets `finished`; each choice's finish_reason is counted, so `saw_finish` says whether all but
    [DONE] was delivered.
Lines that are not JSON chunks with `choices` pass through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from infercloud.openai.sse import sse_done, sse_event


class ChunkRewriter:
    def __init__(self, num_choices: int = 1, wants_ids: bool = False, client_usage: bool = False,
                 client_continuous: bool = False, delivered: list[int] | None = None,
                 bill: Callable[[dict], dict] | None = None):
        self.num_choices = num_choices
        self.wants_ids = wants_ids
        self.client_usage = client_usage
        self.client_continuous = client_continuous
        self.bill = bill
        self.delivered: list[int] = list(delivered or [])   # token ids the client has (a resume starts here)
        self.usage: dict | None = None          # the current attempt's usage so far
        self.finished = False                   # [DONE] seen
        self.has_content = False                # a chunk with content (text, tool calls, logprobs, finish) went out
        self._stream_id: str | None = None
        self._sent_prompt_ids = False
        self._roles_sent: set[int] = set()
        self._choices_finished: set[int] = set()

    @property
    def saw_finish(self) -> bool:
        """Every choice has had its finish_reason: all but [DONE] (and usage) was delivered."""
        return len(self._choices_finished) >= self.num_choices

    def rewrite(self, line: str) -> str | None:
        """One upstream SSE line -> the event for the client (None: nothing to send)."""
        line = line.rstrip("\r\n")
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.finished = True
            return sse_done()
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            return f"{line}\n\n"
        if not isinstance(chunk, dict) or "choices" not in chunk:
            return f"{line}\n\n"
        if isinstance(chunk.get("usage"), dict) and not self._usage(chunk):
            return None
        self._one_stream(chunk)
        keep = [choice for choice in chunk["choices"] if self._choice(choice)]
        if chunk["choices"] and not keep:
            return None
        chunk["choices"] = keep
        return sse_event(chunk)

    def _usage(self, chunk: dict) -> bool:
        """Keep the usage for metering; False when the chunk is the final usage chunk the client did not ask for."""
        self.usage = chunk["usage"]
        if not chunk["choices"]:
            if not (self.client_usage or self.client_continuous):
                return False
        elif not self.client_continuous:
            del chunk["usage"]
        if "usage" in chunk and self.bill is not None:
            chunk["usage"] = self.bill(chunk["usage"])
        return True

    def _one_stream(self, chunk: dict) -> None:
        if self._stream_id is None:
            self._stream_id = chunk.get("id")
        elif "id" in chunk:
            chunk["id"] = self._stream_id
        if "prompt_token_ids" in chunk and (self._sent_prompt_ids or not self.wants_ids):
            del chunk["prompt_token_ids"]
        self._sent_prompt_ids |= self.wants_ids

    def _choice(self, choice: dict) -> bool:
        """Record one choice's ids and finish, trim it; whether the client gets it."""
        ids = choice.get("token_ids") if self.wants_ids else choice.pop("token_ids", None)
        if ids:
            self.delivered.extend(ids)
        index = choice.get("index", 0)
        if choice.get("finish_reason"):
            self._choices_finished.add(index)
        delta = choice.get("delta")
        if isinstance(delta, dict) and "role" in delta:
            if index in self._roles_sent:
                del delta["role"]
            self._roles_sent.add(index)
        content = _has_content(choice)
        self.has_content |= content
        return bool(self.wants_ids and ids) or content or (isinstance(delta, dict) and "role" in delta)


def _has_content(choice: dict) -> bool:
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    calls = delta.get("tool_calls") if isinstance(delta, dict) else None
    return bool(text) or bool(calls) or bool(choice.get("finish_reason")) or bool(choice.get("logprobs"))
