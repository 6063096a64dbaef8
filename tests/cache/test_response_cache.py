"""ResponseCache: exact hits, semantic hits, misses and bypasses; namespaces (tenants, groups); no-cache;
what is stored; counters; an embedding failure is a miss."""

from __future__ import annotations

import asyncio

from infercloud.cache.replay import collect_stream, replay_chunks
from infercloud.cache.response_cache import CacheRequest, ResponseCache
from infercloud.cache.spec import (
    CacheGroupSpec,
    CacheSpec,
    ExactCacheSpec,
    SemanticCacheSpec,
    SemanticModelSpec,
)
from tests.cache.conftest import (
    MODEL,
    FakeClock,
    FakeEmbedder,
    axis,
    chat_body,
    chat_reply,
)

Q, PARAPHRASE, OTHER = "What is the capital of France?", "Which city is the capital of France?", "How tall is K2?"
EMBED = {Q: axis(0), PARAPHRASE: axis(0, tilt=0.2), OTHER: axis(3)}    # paraphrase: cosine 0.98


def _cache(exact=True, semantic=True, groups=(), clock=None, **exact_fields) -> ResponseCache:
    spec = CacheSpec(exact=ExactCacheSpec(enabled=exact, ttl_s=60, **exact_fields),
                     semantic=SemanticCacheSpec(models=(SemanticModelSpec(MODEL),) if semantic else (),
                                                threshold=0.9, ttl_s=60),
                     groups=groups)
    return ResponseCache.from_spec(spec, clock or FakeClock())


def _request(cache, body, tenant="acme", **fields) -> CacheRequest:
    return CacheRequest(cache.namespace(tenant), body["model"], body, **fields)


async def _miss_then_store(cache, request, embed, text="Paris."):
    lookup = await cache.lookup(request, embed)
    assert lookup.status == "miss" and lookup.header == "miss"
    assert await cache.store(lookup, chat_reply(text).body)
    return lookup


def test_exact_hit_needs_the_same_request_and_skips_the_embedding():
    async def main():
        cache, embed = _cache(), FakeEmbedder(EMBED)
        await _miss_then_store(cache, _request(cache, chat_body(Q)), embed)
        hit = await cache.lookup(_request(cache, chat_body(Q, stream=True)), embed)
        assert hit.status == "hit" and hit.hit.kind == "hit" and hit.hit.similarity is None
        assert hit.hit.reply.choice["message"]["content"] == "Paris."
        assert len(embed.calls) == 1                           # the hit was found before embedding
        changed = await cache.lookup(_request(cache, chat_body(Q, max_tokens=65)), embed)
        assert changed.status == "miss"                        # another setting: another context too
        assert cache.counters.hits == 1 and cache.counters.misses == 2 and cache.counters.stores == 1

    asyncio.run(main())


def test_a_paraphrase_is_a_semantic_hit_a_different_question_or_history_is_not():
    async def main():
        cache, embed = _cache(exact=False), FakeEmbedder(EMBED)
        await _miss_then_store(cache, _request(cache, chat_body(Q)), embed)
        hit = await cache.lookup(_request(cache, chat_body(PARAPHRASE)), embed)
        assert hit.status == "semantic-hit" and hit.hit.similarity > 0.97
        assert (await cache.lookup(_request(cache, chat_body(OTHER)), embed)).status == "miss"
        history = [{"role": "user", "content": "Talk about Germany."}, {"role": "assistant", "content": "Ok."}]
        assert (await cache.lookup(_request(cache, chat_body(Q, history=history)), embed)).status == "miss"
        assert cache.counters.semantic_hits == 1 and cache.counters.misses == 3

    asyncio.run(main())


def test_another_tenant_misses_a_tenant_of_the_group_hits():
    async def main():
        groups = (CacheGroupSpec("acme", ("acme", "acme-staging")),)
        cache, embed = _cache(groups=groups), FakeEmbedder(EMBED)
        await _miss_then_store(cache, _request(cache, chat_body(Q)), embed)
        assert (await cache.lookup(_request(cache, chat_body(Q), tenant="globex"), embed)).status == "miss"
        assert (await cache.lookup(_request(cache, chat_body(PARAPHRASE), tenant="globex"), embed)).status == "miss"
        assert (await cache.lookup(_request(cache, chat_body(Q), tenant="acme-staging"), embed)).status == "hit"
        assert cache.namespace("acme") == "group:acme" and cache.namespace("globex") == "tenant:globex"
        assert cache.namespace(None) == "open"

    asyncio.run(main())


def test_not_cacheable_is_a_bypass_and_is_not_stored():
    async def main():
        cache, embed = _cache(), FakeEmbedder(EMBED)
        lookup = await cache.lookup(_request(cache, chat_body(Q, temperature=0.7)), embed)
        assert lookup.status == "bypass" and lookup.header == "miss" and embed.calls == []
        assert not await cache.store(lookup, chat_reply().body)
        assert cache.counters.bypasses == 1 and cache.counters.stores == 0
        allowed = _cache(allow_nondeterministic=True, semantic=False)
        assert (await allowed.lookup(_request(allowed, chat_body(Q, temperature=0.7)), embed)).status == "miss"

    asyncio.run(main())


def test_no_cache_skips_the_lookup_but_refreshes_the_cache():
    async def main():
        cache, embed = _cache(), FakeEmbedder(EMBED)
        await _miss_then_store(cache, _request(cache, chat_body(Q)), embed, text="old")
        fresh = await cache.lookup(_request(cache, chat_body(Q)), embed, read=False)
        assert fresh.status == "bypass" and fresh.hit is None and fresh.semantic is not None
        assert await cache.store(fresh, chat_reply("new").body)
        hit = await cache.lookup(_request(cache, chat_body(Q)), embed)
        assert hit.hit.reply.choice["message"]["content"] == "new"

    asyncio.run(main())


def test_a_streamed_miss_fills_the_cache():
    async def main():
        cache, embed = _cache(), FakeEmbedder(EMBED)
        lookup = await cache.lookup(_request(cache, chat_body(Q, stream=True)), embed)
        chunks = replay_chunks(chat_reply("Streamed Paris."), "chatcmpl-x", 1, include_usage=True)
        assert await cache.store(lookup, collect_stream(chunks, created_at=cache.clock()))
        hit = await cache.lookup(_request(cache, chat_body(Q)), embed)
        assert hit.hit.reply.choice["message"]["content"] == "Streamed Paris."

    asyncio.run(main())


def test_only_a_finished_answer_with_usage_is_stored_and_entries_expire():
    async def main():
        clock = FakeClock()
        cache, embed = _cache(clock=clock), FakeEmbedder(EMBED)
        lookup = await cache.lookup(_request(cache, chat_body(Q)), embed)
        assert not await cache.store(lookup, chat_reply(finish_reason="abort").body)
        assert await cache.store(lookup, chat_reply().body)
        clock.advance(61)
        assert (await cache.lookup(_request(cache, chat_body(Q)), embed)).status == "miss"
        assert (await cache.lookup(_request(cache, chat_body(PARAPHRASE)), embed)).status == "miss"

    asyncio.run(main())


def test_an_embedding_failure_is_a_miss_and_is_counted():
    async def main():
        cache = _cache(exact=False)
        lookup = await cache.lookup(_request(cache, chat_body(Q)), FakeEmbedder(EMBED, fails=True))
        assert lookup.status == "miss" and lookup.semantic is None
        assert cache.counters.embed_errors == 1

    asyncio.run(main())


def test_semantic_cache_is_off_for_other_models_and_without_an_embedder():
    async def main():
        cache, embed = _cache(exact=False), FakeEmbedder(EMBED)
        other = chat_body(Q, model="other-model")
        assert (await cache.lookup(_request(cache, other), embed)).status == "bypass"
        assert (await cache.lookup(_request(cache, chat_body(Q)), None)).status == "bypass"
        assert embed.calls == []
        off = _cache(exact=False, semantic=False)
        assert off.exact is None and off.semantic is None
        assert (await off.lookup(_request(off, chat_body(Q)), embed)).status == "bypass"

    asyncio.run(main())


def test_an_embedder_may_answer_one_row_or_a_flat_vector():
    async def main():
        cache = _cache(exact=False)

        async def flat(texts: list[str]):
            return axis(0) * 2.0                 # 1-D and not unit length: taken as the one text's vector

        await _miss_then_store(cache, _request(cache, chat_body(Q)), flat)
        hit = await cache.lookup(_request(cache, chat_body(PARAPHRASE)), flat)
        assert hit.status == "semantic-hit" and abs(hit.hit.similarity - 1.0) < 1e-6

    asyncio.run(main())
