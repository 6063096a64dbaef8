"""RedisStore: the exact cache's entries in Redis, shared by every gateway using it; and RedisGuard, how both
Redis caches fail open.

Keys: `<prefix>:exact:<key>` (the key is exact_key's sha256 hex, which already holds the namespace), each a
string of CachedReply JSON set with `SET ... PX ttl`: Redis expires it, and evicts by its own maxmemory
policy (`max_entries` is the in-process store's bound only).

Redis unreachable: a cache is an optimization, never a reason to fail a request. On a Redis error the
guard logs one warning and answers "miss" (a lookup) or "not stored" (a put) without calling Redis for
`retry_s`; then it tries again (info log when Redis answers).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from infercloud.cache.store import CachedReply

log = logging.getLogger("infercloud.cache")

SOCKET_TIMEOUT_S = 0.5       # a Redis that does not answer within this is treated as down
T = TypeVar("T")


def open_redis(url: str) -> aioredis.Redis:
    """A client that gives up fast: one try, short timeouts (the request must not wait on its cache)."""
    return aioredis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
                                   retry=Retry(NoBackoff(), 1))


class RedisGuard:
    """Runs Redis calls for a cache: a failure answers `default` and skips Redis for `retry_s`."""

    def __init__(self, what: str, clock: Callable[[], float], retry_s: float = 5.0):
        self.what = what
        self.clock = clock
        self.retry_s = retry_s
        self.num_errors = 0
        self._down_until: float | None = None
        self._is_degraded = False

    async def run(self, call: Callable[[], Awaitable[T]], default: T) -> T:
        if self._down_until is not None and self.clock() < self._down_until:
            return default
        try:
            result = await call()
        except RedisError as exc:
            self.num_errors += 1
            self._down_until = self.clock() + self.retry_s
            if not self._is_degraded:
                self._is_degraded = True
                log.warning("%s unreachable (%s): served as misses for %.0f s at a time until Redis answers",
                            self.what, exc, self.retry_s)
            return default
        self._down_until = None
        if self._is_degraded:
            self._is_degraded = False
            log.info("%s answers again", self.what)
        return result


class RedisStore:
    """Exact-cache entries in Redis: `get` and `put` as MemoryStore's, expiry by Redis."""

    def __init__(self, client: aioredis.Redis, clock: Callable[[], float], prefix: str = "infercloud:cache",
                 retry_s: float = 5.0):
        self.client = client
        self.prefix = prefix
        self.guard = RedisGuard("response cache (Redis)", clock, retry_s)

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float], **kwargs) -> RedisStore:
        return cls(open_redis(url), clock, **kwargs)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:exact:{key}"

    async def get(self, key: str) -> CachedReply | None:
        raw = await self.guard.run(lambda: self.client.get(self._key(key)), None)
        return CachedReply.from_json(raw) if raw is not None else None

    async def put(self, key: str, reply: CachedReply, ttl_s: float) -> None:
        ttl_ms = max(int(ttl_s * 1000), 1)
        await self.guard.run(lambda: self.client.set(self._key(key), reply.to_json(), px=ttl_ms), None)

    async def close(self) -> None:
        await self.client.aclose()
