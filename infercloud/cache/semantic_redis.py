"""RedisSemanticCache: the semantic cache's groups in Redis, shared by every gateway using it.

Keys of one model (`{m}` is a Redis Cluster hash tag, a hash of the model name: a model's keys live on
one node, so the put script may touch the keys it names in its members):
  <prefix>:sem:{m}:g:<group>   hash: entry id -> the entry's unit vector (raw float32 bytes); <group> is
                               sha256(namespace, model, context_hash), so namespaces never share a group
  <prefix>:sem:{m}:r:<id>      string: the entry's CachedReply JSON, expiring after ttl_s (PX)
  <prefix>:sem:{m}:ix          sorted set: "<group>|<id>" per entry, scored by when it was put
                               (Redis ms * 1000 + a per-model sequence, so order is strict)
  <prefix>:sem:{m}:seq         the sequence
Lookup (no script): HGETALL the group, compare in numpy (cache/semantic.py `ranked`), then GET the replies
of the candidates at or above the threshold, best first; a candidate whose reply has expired is removed
from the group (HDEL) and the next one tried. Put (one Lua script, Redis's own clock): store vector and
reply, renew the group's expiry, drop index members older than ttl_s and then the oldest beyond
max_entries, deleting their vectors and replies. Failures fail open (redis_store.RedisGuard).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

import numpy as np
import redis.asyncio as aioredis

from infercloud.cache.redis_store import RedisGuard, open_redis
from infercloud.cache.semantic import SemanticMatch, ranked, unit_vector
from infercloud.cache.store import CachedReply

# KEYS: group hash, reply key, index, sequence. ARGV: entry id, vector bytes, reply JSON, ttl ms,
# max entries, group id, key base ("<prefix>:sem:{m}"). Returns the number of entries evicted.
_PUT = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl_ms, max_entries, base = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[7]
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl_ms)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl_ms)
local function num(x) return string.format('%.0f', x) end
local seq = redis.call('INCR', KEYS[4]) % 1000
redis.call('ZADD', KEYS[3], num(now_ms * 1000 + seq), ARGV[6] .. '|' .. ARGV[1])
redis.call('PEXPIRE', KEYS[3], ttl_ms)
redis.call('PEXPIRE', KEYS[4], ttl_ms)
local function drop(member)
  local group, id = string.match(member, '^(.*)|(.*)$')
  redis.call('HDEL', base .. ':g:' .. group, id)
  redis.call('DEL', base .. ':r:' .. id)
end
local dropped = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. num((now_ms - ttl_ms) * 1000))) do
  drop(member)
  redis.call('ZREM', KEYS[3], member)
  dropped = dropped + 1
end
local excess = redis.call('ZCARD', KEYS[3]) - max_entries
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[3], excess)
  for i = 1, #popped, 2 do drop(popped[i]) end
  dropped = dropped + excess
end
return dropped
"""


class RedisSemanticCache:
    """Semantic-cache entries in Redis: `lookup` and `put` as MemorySemanticCache's, expiry by Redis."""

    def __init__(self, client: aioredis.Redis, clock: Callable[[], float], prefix: str = "infercloud:cache",
                 retry_s: float = 5.0):
        self.client = client
        self.prefix = prefix
        self.guard = RedisGuard("semantic cache (Redis)", clock, retry_s)
        self._put = client.register_script(_PUT)

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float], **kwargs) -> RedisSemanticCache:
        return cls(open_redis(url), clock, **kwargs)

    def _base(self, model: str) -> str:
        return f"{self.prefix}:sem:{{{hashlib.sha256(model.encode()).hexdigest()[:16]}}}"

    @staticmethod
    def _group(namespace: str, model: str, context_hash: str) -> str:
        return hashlib.sha256(f"{namespace}\0{model}\0{context_hash}".encode()).hexdigest()

    async def lookup(self, namespace: str, model: str, context_hash: str, vector: np.ndarray,
                     threshold: float) -> SemanticMatch | None:
        return await self.guard.run(lambda: self._lookup(namespace, model, context_hash, vector, threshold), None)

    async def _lookup(self, namespace: str, model: str, context_hash: str, vector: np.ndarray,
                      threshold: float) -> SemanticMatch | None:
        base = self._base(model)
        group_key = f"{base}:g:{self._group(namespace, model, context_hash)}"
        stored = await self.client.hgetall(group_key)
        if not stored:
            return None
        ids = list(stored)
        vectors = [np.frombuffer(stored[i], dtype=np.float32) for i in ids]
        for index, similarity in ranked(vectors, unit_vector(vector), threshold):
            entry_id = ids[index].decode()
            raw = await self.client.get(f"{base}:r:{entry_id}")
            if raw is not None:
                return SemanticMatch(CachedReply.from_json(raw), similarity)
            await self.client.hdel(group_key, entry_id)   # its reply expired: so has the entry
        return None

    async def put(self, namespace: str, model: str, context_hash: str, vector: np.ndarray, reply: CachedReply,
                  ttl_s: float, max_entries: int) -> None:
        base, group = self._base(model), self._group(namespace, model, context_hash)
        entry_id = uuid.uuid4().hex
        keys = [f"{base}:g:{group}", f"{base}:r:{entry_id}", f"{base}:ix", f"{base}:seq"]
        args = [entry_id, unit_vector(vector).tobytes(), reply.to_json(), max(int(ttl_s * 1000), 1), max_entries,
                group, base]
        await self.guard.run(lambda: self._put(keys=keys, args=args), None)

    async def close(self) -> None:
        await self.client.aclose()
