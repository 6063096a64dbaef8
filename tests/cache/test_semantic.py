"""MemorySemanticCache: the best entry at or above the threshold, only within its own group (namespace,
model, context hash), TTL on the injected clock, at most max_entries per model with the oldest first out."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from infercloud.cache.semantic import MemorySemanticCache, ranked, unit_vector
from tests.cache.conftest import MODEL, FakeClock, axis, chat_reply

NS, CTX = "tenant:acme", "ctx-1"


def _put(cache, vector, text, namespace=NS, model=MODEL, context=CTX, ttl_s=60.0, max_entries=100):
    return cache.put(namespace, model, context, vector, chat_reply(text), ttl_s, max_entries)


def _answer(match) -> str | None:
    return None if match is None else match.reply.choice["message"]["content"]


def test_best_match_at_or_above_threshold():
    async def main():
        cache = MemorySemanticCache(FakeClock())
        await _put(cache, axis(0), "zero")
        await _put(cache, axis(1), "one")
        match = await cache.lookup(NS, MODEL, CTX, axis(0, tilt=0.2), threshold=0.9)   # cosine 0.98 to axis 0
        assert _answer(match) == "zero" and match.similarity == pytest.approx(1 / np.sqrt(1.04), abs=1e-6)
        assert await cache.lookup(NS, MODEL, CTX, axis(0, tilt=0.6), threshold=0.9) is None   # cosine 0.86
        assert _answer(await cache.lookup(NS, MODEL, CTX, axis(0) * 3, threshold=1.0 - 1e-6)) == "zero"

    asyncio.run(main())


def test_groups_never_share_entries():
    async def main():
        cache = MemorySemanticCache(FakeClock())
        await _put(cache, axis(0), "acme's")
        assert await cache.lookup("tenant:other", MODEL, CTX, axis(0), 0.5) is None    # another namespace
        assert await cache.lookup(NS, "other-model", CTX, axis(0), 0.5) is None        # another model
        assert await cache.lookup(NS, MODEL, "ctx-2", axis(0), 0.5) is None            # another history
        assert _answer(await cache.lookup(NS, MODEL, CTX, axis(0), 0.5)) == "acme's"

    asyncio.run(main())


def test_entries_expire_after_their_ttl():
    async def main():
        clock = FakeClock()
        cache = MemorySemanticCache(clock)
        await _put(cache, axis(0), "old", ttl_s=10)
        clock.advance(5)
        await _put(cache, axis(0, tilt=0.1), "new", ttl_s=10)
        assert _answer(await cache.lookup(NS, MODEL, CTX, axis(0), 0.9)) == "old"     # the closer one
        clock.advance(5)
        assert _answer(await cache.lookup(NS, MODEL, CTX, axis(0), 0.9)) == "new"     # old expired
        assert cache.num_entries(MODEL) == 1
        clock.advance(5)
        assert await cache.lookup(NS, MODEL, CTX, axis(0), 0.9) is None
        assert cache.num_entries(MODEL) == 0

    asyncio.run(main())


def test_oldest_of_a_model_is_evicted_over_its_max_entries_across_groups():
    async def main():
        cache = MemorySemanticCache(FakeClock())
        await _put(cache, axis(0), "a", context="c1", max_entries=2)
        await _put(cache, axis(1), "b", namespace="tenant:other", context="c2", max_entries=2)
        await _put(cache, axis(2), "other model", model="other-model", max_entries=2)   # counted apart
        assert _answer(await cache.lookup(NS, MODEL, "c1", axis(0), 0.9)) == "a"    # a hit does not renew
        await _put(cache, axis(3), "c", context="c3", max_entries=2)
        assert await cache.lookup(NS, MODEL, "c1", axis(0), 0.9) is None
        assert _answer(await cache.lookup("tenant:other", MODEL, "c2", axis(1), 0.9)) == "b"
        assert _answer(await cache.lookup(NS, MODEL, "c3", axis(3), 0.9)) == "c"
        assert cache.num_entries(MODEL) == 2 and cache.num_entries("other-model") == 1

    asyncio.run(main())


def test_vectors_of_another_dimension_are_never_compared():
    async def main():
        cache = MemorySemanticCache(FakeClock())
        await _put(cache, axis(0, dim=4), "4-dim")
        assert await cache.lookup(NS, MODEL, CTX, axis(0, dim=8), 0.1) is None
        await _put(cache, axis(0, dim=8), "8-dim")
        assert _answer(await cache.lookup(NS, MODEL, CTX, axis(0, dim=8), 0.1)) == "8-dim"

    asyncio.run(main())


def test_ranked_and_unit_vector():
    vectors = [axis(0), axis(1), axis(0, tilt=0.1)]
    assert [i for i, _ in ranked(vectors, axis(0), 0.5)] == [0, 2]
    assert ranked([], axis(0), 0.5) == []
    assert np.linalg.norm(unit_vector(np.array([[3.0, 4.0]]))) == pytest.approx(1.0)
    for bad in (np.zeros(3), np.array([np.nan, 1.0]), np.array([])):
        with pytest.raises(ValueError):
            unit_vector(bad)
