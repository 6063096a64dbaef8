"""The caches in a real Redis: exact entries shared by two gateways and expired by Redis; semantic groups
(isolation, best match, the oldest of a model evicted, an expired reply skipped); failing open when Redis
is down, and back when it answers."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np

from infercloud.cache.redis_store import RedisStore
from infercloud.cache.semantic_redis import RedisSemanticCache
from tests.cache.conftest import MODEL, FakeClock, axis, chat_reply

NS, CTX = "tenant:acme", "ctx-1"


def _run(url: str, test, kind=RedisStore, count: int = 1, clock=None) -> None:
    """Run `test(*caches)` with `count` caches of `kind` on one Redis and a key prefix of this test's own."""
    prefix = f"test:{uuid.uuid4().hex[:8]}"

    async def main():
        caches = [kind.from_url(url, clock or FakeClock(), prefix=prefix) for _ in range(count)]
        try:
            await test(*caches)
        finally:
            for cache in caches:
                await cache.close()

    asyncio.run(main())


def _answer(match) -> str | None:
    return None if match is None else match.reply.choice["message"]["content"]


def test_exact_entries_are_shared_by_gateways_and_expire_in_redis(redis_url):
    async def test(one, two):
        await one.put("k1", chat_reply("Paris."), ttl_s=30)
        reply = await two.get("k1")
        assert reply == chat_reply("Paris.")
        assert await two.get("k2") is None
        ttl_ms = await one.client.pttl(one._key("k1"))
        assert 0 < ttl_ms <= 30_000

    _run(redis_url, test, count=2)


def test_semantic_best_match_within_its_group_only(redis_url):
    async def test(one, two):
        await one.put(NS, MODEL, CTX, axis(0), chat_reply("zero"), 30, 100)
        await one.put(NS, MODEL, CTX, axis(1), chat_reply("one"), 30, 100)
        match = await two.lookup(NS, MODEL, CTX, axis(0, tilt=0.2), 0.9)
        assert _answer(match) == "zero" and abs(match.similarity - 1 / np.sqrt(1.04)) < 1e-6
        assert await two.lookup(NS, MODEL, CTX, axis(0, tilt=0.6), 0.9) is None
        assert await two.lookup("tenant:other", MODEL, CTX, axis(0), 0.5) is None
        assert await two.lookup(NS, "other-model", CTX, axis(0), 0.5) is None
        assert await two.lookup(NS, MODEL, "ctx-2", axis(0), 0.5) is None

    _run(redis_url, test, RedisSemanticCache, count=2)


def test_semantic_oldest_of_a_model_is_evicted_and_entries_expire_in_redis(redis_url):
    async def test(cache):
        await cache.put(NS, MODEL, "c1", axis(0), chat_reply("a"), 30, 2)
        await cache.put("tenant:other", MODEL, "c2", axis(1), chat_reply("b"), 30, 2)
        await cache.put(NS, "other-model", CTX, axis(2), chat_reply("other model"), 30, 2)
        await cache.put(NS, MODEL, "c3", axis(3), chat_reply("c"), 30, 2)
        assert await cache.lookup(NS, MODEL, "c1", axis(0), 0.9) is None
        assert _answer(await cache.lookup("tenant:other", MODEL, "c2", axis(1), 0.9)) == "b"
        assert _answer(await cache.lookup(NS, MODEL, "c3", axis(3), 0.9)) == "c"
        assert _answer(await cache.lookup(NS, "other-model", CTX, axis(2), 0.9)) == "other model"
        base = cache._base(MODEL)
        assert await cache.client.zcard(f"{base}:ix") == 2
        replies = [k async for k in cache.client.scan_iter(f"{base}:r:*")]
        assert len(replies) == 2
        assert all(0 < ttl_ms <= 30_000 for ttl_ms in [await cache.client.pttl(k) for k in replies])

    _run(redis_url, test, RedisSemanticCache)


def test_semantic_entry_whose_reply_expired_is_skipped_and_removed(redis_url):
    async def test(cache):
        await cache.put(NS, MODEL, CTX, axis(0), chat_reply("best"), 30, 100)
        await cache.put(NS, MODEL, CTX, axis(0, tilt=0.1), chat_reply("second"), 30, 100)
        base, group = cache._base(MODEL), cache._group(NS, MODEL, CTX)
        best = None
        for entry_id in [i.decode() for i in await cache.client.hkeys(f"{base}:g:{group}")]:
            if b'"best"' in await cache.client.get(f"{base}:r:{entry_id}"):
                best = entry_id
        await cache.client.delete(f"{base}:r:{best}")       # its reply expired, as Redis does after ttl_s
        assert _answer(await cache.lookup(NS, MODEL, CTX, axis(0), 0.9)) == "second"
        assert best not in [i.decode() for i in await cache.client.hkeys(f"{base}:g:{group}")]

    _run(redis_url, test, RedisSemanticCache)


def test_both_caches_fail_open_while_redis_is_down_and_come_back(own_redis):
    clock = FakeClock()

    async def test(store):
        semantic = RedisSemanticCache.from_url(own_redis.url, clock, prefix=store.prefix, retry_s=5)
        try:
            await store.put("k", chat_reply("up"), 30)
            own_redis.stop()
            assert await store.get("k") is None                     # a miss, not an error
            await store.put("k2", chat_reply(), 30)
            await semantic.put(NS, MODEL, CTX, axis(0), chat_reply(), 30, 10)
            assert await semantic.lookup(NS, MODEL, CTX, axis(0), 0.9) is None
            assert store.guard.num_errors == 1 and semantic.guard.num_errors == 1
            assert await store.get("k") is None and store.guard.num_errors == 1    # Redis not tried again yet
            own_redis.start()                                       # a fresh, empty server on the same port
            clock.advance(5)
            await store.put("k", chat_reply("back"), 30)
            assert _answer_of(await store.get("k")) == "back"
            await semantic.put(NS, MODEL, CTX, axis(0), chat_reply("back"), 30, 10)
            assert _answer(await semantic.lookup(NS, MODEL, CTX, axis(0), 0.9)) == "back"
        finally:
            await semantic.close()

    _run(own_redis.url, test, clock=clock)


def _answer_of(reply) -> str | None:
    return None if reply is None else reply.choice["message"]["content"]
