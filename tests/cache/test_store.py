"""MemoryStore: TTL on the injected clock, least recently used evicted first; CachedReply JSON; what is
storable."""

from __future__ import annotations

import asyncio

from infercloud.cache.store import CachedReply, MemoryStore, storable
from tests.cache.conftest import FakeClock, chat_reply, text_reply


def test_an_entry_lives_its_ttl_then_is_gone():
    async def main():
        clock = FakeClock()
        store = MemoryStore(10, clock)
        await store.put("k", chat_reply(), ttl_s=60)
        clock.advance(59.9)
        assert (await store.get("k")).body["choices"][0]["message"]["content"] == "Paris is the capital of France."
        clock.advance(0.1)
        assert await store.get("k") is None
        assert len(store) == 0            # dropped when found expired

    asyncio.run(main())


def test_least_recently_used_goes_first():
    async def main():
        store = MemoryStore(2, FakeClock())
        await store.put("a", chat_reply("A"), 60)
        await store.put("b", chat_reply("B"), 60)
        assert await store.get("a") is not None        # a is now the most recently used
        await store.put("c", chat_reply("C"), 60)
        assert await store.get("b") is None
        assert (await store.get("a")).choice["message"]["content"] == "A"
        assert (await store.get("c")).choice["message"]["content"] == "C"
        await store.put("a", chat_reply("A2"), 60)     # a put replaces and renews
        assert len(store) == 2 and (await store.get("a")).choice["message"]["content"] == "A2"

    asyncio.run(main())


def test_cached_reply_round_trips_through_json():
    reply = chat_reply(tool_calls=[{"id": "call_1", "type": "function",
                                    "function": {"name": "f", "arguments": "{\"x\": \"é\"}"}}])
    assert CachedReply.from_json(reply.to_json()) == reply
    assert CachedReply.from_json(reply.to_json().encode()) == reply


def test_storable_needs_one_finished_choice_with_usage():
    assert storable(chat_reply().body) and storable(text_reply().body)
    assert storable(chat_reply(finish_reason="tool_calls").body)
    assert not storable(chat_reply(finish_reason="abort").body)
    no_usage = {k: v for k, v in chat_reply().body.items() if k != "usage"}
    two = {**chat_reply().body, "choices": chat_reply().body["choices"] * 2}
    chunk = {**chat_reply().body, "object": "chat.completion.chunk"}
    for body in (no_usage, two, chunk, {"error": {"message": "x"}}, None):
        assert not storable(body)
