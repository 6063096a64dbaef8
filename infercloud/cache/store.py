"""The exact cache's store: CachedReply, the ResponseStore interface, and MemoryStore (in-process LRU with TTL).

MemoryStore's algorithm: an OrderedDict from key to (expiry, reply), least recently used first. `get`
drops an expired entry it finds and moves a live one to the end; `put` inserts at the end and then drops
from the front until at most `max_entries` remain. Expiry is read from the injected clock, so entries
are never swept in the background: an expired entry takes memory until it is looked up or evicted.
RedisStore (redis_store.py) keeps the same entries in Redis, expired by Redis itself.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

REPLY_OBJECTS = ("chat.completion", "text_completion")
STORABLE_FINISH = ("stop", "length", "tool_calls")


@dataclass(frozen=True)
class CachedReply:
    """A completed answer as a non-streamed client gets it (the whole `chat.completion` or `text_completion`
    object, usage included), and when it was stored (clock seconds)."""

    body: dict
    created_at: float

    @property
    def is_chat(self) -> bool:
        return self.body.get("object") == "chat.completion"

    @property
    def usage(self) -> dict | None:
        usage = self.body.get("usage")
        return usage if isinstance(usage, dict) else None

    @property
    def choice(self) -> dict:
        return self.body["choices"][0]

    def to_json(self) -> str:
        return json.dumps({"body": self.body, "created_at": self.created_at}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> CachedReply:
        data = json.loads(text)
        return cls(data["body"], float(data["created_at"]))


def storable(body: object) -> bool:
    """Whether an answer may be cached: a chat or text completion of one choice that finished (stop, length
    or tool calls) and says its usage."""
    if not isinstance(body, dict) or body.get("object") not in REPLY_OBJECTS:
        return False
    choices = body.get("choices")
    if not (isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], dict)):
        return False
    choice = choices[0]
    has_content = isinstance(choice.get("message"), dict) if body["object"] == "chat.completion" \
        else isinstance(choice.get("text"), str)
    return has_content and choice.get("finish_reason") in STORABLE_FINISH and isinstance(body.get("usage"), dict)


class ResponseStore(Protocol):
    """Where exact-cache entries live: key -> CachedReply, each for ttl_s seconds."""

    async def get(self, key: str) -> CachedReply | None: ...

    async def put(self, key: str, reply: CachedReply, ttl_s: float) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """This process's exact-cache entries: at most `max_entries`, least recently used evicted first."""

    def __init__(self, max_entries: int, clock: Callable[[], float]):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedReply]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedReply | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, reply = entry
        if self.clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return reply

    async def put(self, key: str, reply: CachedReply, ttl_s: float) -> None:
        self._entries[key] = (self.clock() + ttl_s, reply)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()
