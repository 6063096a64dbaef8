"""ResponseCache: the facade the gateway calls, around the exact and semantic caches (no HTTP in here).

One request, in order:
  1. `lookup(request, embed)`: a request that is not cacheable (keys.is_cacheable: kind, n, logprobs,
     determinism) is a bypass. Otherwise the exact key is looked up (exact cache on): found, a "hit".
     Else, when the semantic cache is on for the model and the body's last message is a text user turn,
     that text is embedded (`embed`, the gateway's own embeddings path: texts -> unit vectors) and the
     entries of its group (namespace, model, context hash) searched: one at least the model's threshold
     similar is a "semantic-hit". Else a "miss". An embedding failure is logged and counted: a miss.
     `read=False` (Cache-Control: no-cache) skips the search but prepares the keys, so the answer still
     refreshes the cache.
  2. on a miss, once the answer is complete: `store(lookup, reply)` with the `chat.completion` or
     `text_completion` object (a stream's: replay.collect_stream). Only a finished single choice with
     usage is stored; under both keys when both caches are on.
Namespace: the tenant's name, or its group's when the config puts it in one (`namespace(tenant)`);
without tenancy one open namespace. Counters are plain ints the gateway exports as metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from infercloud.cache.keys import CHAT_PATH, exact_key, is_cacheable, semantic_parts
from infercloud.cache.redis_store import RedisStore
from infercloud.cache.semantic import MemorySemanticCache, SemanticCache, unit_vector
from infercloud.cache.semantic_redis import RedisSemanticCache
from infercloud.cache.spec import CacheSpec, SemanticSettings
from infercloud.cache.store import CachedReply, MemoryStore, ResponseStore, storable

log = logging.getLogger("infercloud.cache")

CACHE_HEADER = "x-infercloud-cache"            # hit | semantic-hit | miss
OPEN_NAMESPACE = "open"                        # no tenancy: one namespace
Embedder = Callable[[list[str]], Awaitable[np.ndarray]]   # texts -> [len(texts), dim] unit vectors
Status = Literal["hit", "semantic-hit", "miss", "bypass"]


@dataclass(frozen=True)
class CacheRequest:
    """What the cache reads of a request (from the gateway's RequestFacts)."""

    namespace: str                             # ResponseCache.namespace(facts.tenant)
    model: str
    body: dict                                 # the client's body as sent
    path: str = CHAT_PATH
    max_new_tokens: int | None = None          # facts.max_new_tokens: what it asked for, or the tenant's cap


@dataclass(frozen=True)
class Hit:
    kind: Literal["hit", "semantic-hit"]
    reply: CachedReply
    similarity: float | None = None            # semantic hits: the cosine similarity of the user turns


@dataclass(frozen=True)
class SemanticKey:
    context_hash: str
    vector: np.ndarray                         # the last user turn, embedded (unit length)
    settings: SemanticSettings


@dataclass(frozen=True)
class Lookup:
    """A lookup's result, and the keys `store` files the answer under (None: that cache does not apply)."""

    request: CacheRequest
    status: Status
    hit: Hit | None = None
    exact_key: str | None = None
    semantic: SemanticKey | None = None

    @property
    def header(self) -> str:
        """The value of CACHE_HEADER: a bypass is a miss to the client."""
        return "miss" if self.status == "bypass" else self.status


@dataclass
class CacheCounters:
    hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    bypasses: int = 0                          # not cacheable, or Cache-Control: no-cache
    stores: int = 0
    embed_errors: int = 0


class ResponseCache:
    """The gateway's response caches behind two calls: `lookup` for every request, `store` after a miss."""

    def __init__(self, spec: CacheSpec, exact: ResponseStore | None, semantic: SemanticCache | None,
                 clock: Callable[[], float] = time.time):
        self.spec = spec
        self.exact = exact
        self.semantic = semantic
        self.clock = clock
        self.counters = CacheCounters()
        self._embed_failing = False            # warned once; warned again after an embedding succeeds

    @classmethod
    def from_spec(cls, spec: CacheSpec, clock: Callable[[], float] = time.time) -> ResponseCache:
        """In-process stores, or Redis ones when `spec.redis_url` is set; a cache that is off has none."""
        exact: ResponseStore | None = None
        semantic: SemanticCache | None = None
        if spec.exact.enabled:
            exact = RedisStore.from_url(spec.redis_url, clock, prefix=spec.key_prefix) if spec.redis_url \
                else MemoryStore(spec.exact.max_entries, clock)
        if spec.semantic.models:
            semantic = RedisSemanticCache.from_url(spec.redis_url, clock, prefix=spec.key_prefix) \
                if spec.redis_url else MemorySemanticCache(clock)
        return cls(spec, exact, semantic, clock)

    def namespace(self, tenant: str | None) -> str:
        """Whose cached replies a tenant may be served: its group's, else its own ("tenant:" and "group:"
        keep a tenant and a group of the same name apart)."""
        if tenant is None:
            return OPEN_NAMESPACE
        group = self.spec.group_of(tenant)
        return f"group:{group}" if group is not None else f"tenant:{tenant}"

    async def lookup(self, request: CacheRequest, embed: Embedder | None = None, read: bool = True) -> Lookup:
        key = self._exact_key(request)
        settings = self.spec.semantic.for_model(request.model) if self.semantic is not None else None
        parts = semantic_parts(request.body, request.model, request.max_new_tokens, request.path) \
            if settings is not None and embed is not None and self._cacheable(request, semantic=True) else None
        if (key is None and parts is None) or not read:
            return self._bypass(request, key, await self._semantic_key(parts, settings, embed))
        if key is not None:
            reply = await self.exact.get(key)
            if reply is not None:
                self.counters.hits += 1
                return Lookup(request, "hit", Hit("hit", reply), key)
        semantic = await self._semantic_key(parts, settings, embed)
        if semantic is not None:
            match = await self.semantic.lookup(request.namespace, request.model, semantic.context_hash,
                                               semantic.vector, semantic.settings.threshold)
            if match is not None:
                self.counters.semantic_hits += 1
                return Lookup(request, "semantic-hit", Hit("semantic-hit", match.reply, match.similarity), key,
                              semantic)
        self.counters.misses += 1
        return Lookup(request, "miss", None, key, semantic)

    def _bypass(self, request: CacheRequest, key: str | None, semantic: SemanticKey | None) -> Lookup:
        self.counters.bypasses += 1
        return Lookup(request, "bypass", None, key, semantic)

    def _cacheable(self, request: CacheRequest, semantic: bool) -> bool:
        allow = self.spec.semantic.allow_nondeterministic if semantic else self.spec.exact.allow_nondeterministic
        return is_cacheable(request.body, allow, request.path)

    def _exact_key(self, request: CacheRequest) -> str | None:
        if self.exact is None or not self._cacheable(request, semantic=False):
            return None
        return exact_key(request.namespace, request.model, request.body, request.path, request.max_new_tokens)

    async def _semantic_key(self, parts: tuple[str, str] | None, settings: SemanticSettings | None,
                            embed: Embedder | None) -> SemanticKey | None:
        """The semantic key of a request (its last user turn embedded), None when it has none or the
        embedding failed (logged and counted: the cache never fails a request)."""
        if parts is None or settings is None or embed is None:
            return None
        context_hash, text = parts
        try:
            vectors = await embed([text])
            vector = unit_vector(np.atleast_2d(np.asarray(vectors, dtype=np.float32))[0])
        except Exception as exc:   # noqa: BLE001 - any failure of the embedding path is a miss, not an error
            self.counters.embed_errors += 1
            log.log(logging.DEBUG if self._embed_failing else logging.WARNING,
                    "semantic cache: embedding the last user turn failed (%s): served as misses", exc)
            self._embed_failing = True
            return None
        self._embed_failing = False
        return SemanticKey(context_hash, vector, settings)

    async def store(self, lookup: Lookup, reply: dict | CachedReply) -> bool:
        """File a miss's (or a no-cache request's) answer under its keys; whether it was stored (False: not
        cacheable, a hit already, or an answer that is not one finished choice with usage)."""
        if lookup.hit is not None or (lookup.exact_key is None and lookup.semantic is None):
            return False
        cached = reply if isinstance(reply, CachedReply) else CachedReply(reply, self.clock())
        if not storable(cached.body):
            return False
        request = lookup.request
        if lookup.exact_key is not None:
            await self.exact.put(lookup.exact_key, cached, self.spec.exact.ttl_s)
        if lookup.semantic is not None:
            key = lookup.semantic
            await self.semantic.put(request.namespace, request.model, key.context_hash, key.vector, cached,
                                    key.settings.ttl_s, key.settings.max_entries)
        self.counters.stores += 1
        return True

    async def close(self) -> None:
        for store in (self.exact, self.semantic):
            if store is not None:
                await store.close()
