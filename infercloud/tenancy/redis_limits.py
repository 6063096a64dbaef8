"""Per-tenant rate limits and concurrency counts shared through Redis by every gateway that uses it.

The same token buckets, 429s and headers as `RateLimiter` (tenancy/limits.py), kept in Redis so that
N gateways admit a tenant's limits once in all, not N times. Each admission is one Lua script run
(EVALSHA): refill, check and take happen together inside Redis, so gateways racing for the last unit
never over-admit. The scripts read Redis's own clock (`TIME`), so the gateways' clocks do not matter.

Keys of tenant 7 (`{7}` is a Redis Cluster hash tag: one tenant's keys live on one node):
  infercloud:rl:{7}:requests  hash {limit, level, at}: requests-per-minute bucket at server time `at`
  infercloud:rl:{7}:tokens    hash {limit, level, at}: tokens-per-minute bucket
  infercloud:rl:{7}:leases    sorted set: one member per request in flight, scored by its lease expiry
A bucket key expires after 61 s unused: by then it would have refilled, and a missing bucket is full
(as is one whose limit changed). The concurrency count is the number of unexpired leases.

Leases: a gateway that dies with requests in flight never releases their slots, so each slot is a
lease of `lease_s` (30 s) that its gateway renews every `lease_s / 3` while the request lives (one
script per tenant with requests in flight). Every admission first drops expired leases, so a dead
gateway's slots come back within `lease_s`. A lease whose acquire timed out or was cancelled after
Redis took it is never renewed either, and ends the same way.

Redis unreachable: fail open. Admission must not depend on a side store being up, so on a Redis error
this gateway logs one warning and admits with its own per-process `RateLimiter` for `retry_s`, then
tries Redis again (info log when it answers). During an outage each gateway enforces the full limits
on its own; slots taken then are released to that limiter, and leases the outage stranded expire.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from infercloud.tenancy.errors import RateLimited
from infercloud.tenancy.limits import RateLimiter, Slot, TenantLimits, TokenBucket

log = logging.getLogger("infercloud.tenancy")

BUCKET_TTL_S = 61          # an unused bucket refills within 60 s; then its key may go
SOCKET_TIMEOUT_S = 0.5     # a Redis that does not answer within this is treated as down

# Shared by the scripts: `now` in server seconds, a float formatted losslessly, and a bucket refilled
# to now (its `limit` units per minute, up to `limit`; full when missing or when its limit changed).
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function num(x) return string.format('%.17g', x) end
local function refilled(key, limit)
  local b = redis.call('HMGET', key, 'limit', 'level', 'at')
  if tonumber(b[1]) ~= limit then return limit end
  return math.min(limit, tonumber(b[2]) + math.max(now - tonumber(b[3]), 0) * limit / 60)
end
local function save(key, limit, level, ttl_s)
  redis.call('HSET', key, 'limit', limit, 'level', num(level), 'at', num(now))
  redis.call('EXPIRE', key, ttl_s)
end
"""

# KEYS: requests bucket, tokens bucket, leases. ARGV: rpm, tpm, max concurrent ('' for none of each),
# tokens, lease id, lease_s, bucket ttl. Returns {admitted 1|0, in flight, requests level, tokens level}.
_ACQUIRE = _PRELUDE + """
local rpm, tpm, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, lease_s, ttl_s = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', num(now))
local in_flight = redis.call('ZCARD', KEYS[3])
local requests = rpm and refilled(KEYS[1], rpm)
local tokens_left = tpm and refilled(KEYS[2], tpm)
local admitted = (not cap or in_flight < cap) and (not tpm or tokens <= tpm)
  and (not requests or requests >= 1) and (not tokens_left or tokens_left >= tokens)
if admitted then
  requests = requests and requests - 1
  tokens_left = tokens_left and tokens_left - tokens
  redis.call('ZADD', KEYS[3], num(now + lease_s), ARGV[5])
  redis.call('EXPIRE', KEYS[3], math.ceil(lease_s) + 1)
  in_flight = in_flight + 1
end
if requests then save(KEYS[1], rpm, requests, ttl_s) end
if tokens_left then save(KEYS[2], tpm, tokens_left, ttl_s) end
return {admitted and 1 or 0, in_flight, requests and num(requests) or false, tokens_left and num(tokens_left) or false}
"""

# KEYS: tokens bucket, leases. ARGV: lease id, unused tokens, bucket ttl. Returns the tokens level (or nil).
_RELEASE = _PRELUDE + """
redis.call('ZREM', KEYS[2], ARGV[1])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit'))
if not limit then return false end
local level = math.min(limit, refilled(KEYS[1], limit) + math.max(tonumber(ARGV[2]), 0))
save(KEYS[1], limit, level, tonumber(ARGV[3]))
return num(level)
"""

# KEYS: leases. ARGV: lease_s, lease ids still in flight here. Leases already dropped stay dropped (XX).
_RENEW = _PRELUDE + """
local lease_s = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', num(now + lease_s), ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(lease_s) + 1)
"""

# KEYS: leases. Returns the number of unexpired leases.
_IN_FLIGHT = _PRELUDE + """
return redis.call('ZCOUNT', KEYS[1], '(' .. num(now), '+inf')
"""


class RedisRateLimiter:
    """Rate limits in Redis, shared by every gateway using it; this process's own while Redis is down."""

    def __init__(self, client: aioredis.Redis, clock: Callable[[], float], lease_s: float = 30.0,
                 retry_s: float = 5.0, prefix: str = "infercloud:rl"):
        self.client = client
        self.clock = clock
        self.lease_s = lease_s
        self.retry_s = retry_s
        self.prefix = prefix
        self.fallback = RateLimiter(clock)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._count = client.register_script(_IN_FLIGHT)
        self._lease_prefix = uuid.uuid4().hex[:12]   # this gateway's leases: `<prefix>:<n>`
        self._lease_numbers = itertools.count()
        self._leases: dict[int, set[str]] = {}       # tenant id -> lease ids held here, renewed
        self._seen: dict[int, TenantLimits] = {}     # tenant id -> its counters as Redis last told
        self._renewer: asyncio.Task | None = None
        self._down_until: float | None = None        # Redis failed: the fallback serves until then
        self._is_degraded = False

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float], **kwargs) -> "RedisRateLimiter":
        client = aioredis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S,
                                         socket_connect_timeout=SOCKET_TIMEOUT_S, retry=Retry(NoBackoff(), 1))
        return cls(client, clock, **kwargs)

    def _keys(self, tenant_id: int) -> tuple[str, str, str]:
        base = f"{self.prefix}:{{{tenant_id}}}"
        return f"{base}:requests", f"{base}:tokens", f"{base}:leases"

    async def acquire(self, tenant_id: int, rpm: int | None, tpm: int | None, concurrent: int | None,
                      tokens: int) -> Slot:
        """Take 1 request, `tokens` tokens and a concurrency slot, or raise RateLimited taking nothing."""
        if self._is_down():
            return await self.fallback.acquire(tenant_id, rpm, tpm, concurrent, tokens)
        lease_id = f"{self._lease_prefix}:{next(self._lease_numbers)}"
        args = ["" if rpm is None else rpm, "" if tpm is None else tpm, "" if concurrent is None else concurrent,
                tokens, lease_id, self.lease_s, BUCKET_TTL_S]
        try:
            reply = await self._acquire(keys=self._keys(tenant_id), args=args)
        except RedisError as exc:
            self._went_down(exc)
            return await self.fallback.acquire(tenant_id, rpm, tpm, concurrent, tokens)
        self._came_back()
        is_admitted, in_flight, requests_level, tokens_level = reply
        state = TenantLimits(rpm, tpm, concurrent, _bucket(rpm, requests_level), _bucket(tpm, tokens_level),
                             in_flight - int(is_admitted))
        self._seen[tenant_id] = state
        if not is_admitted:
            raise state.refusal(tokens) or RateLimited("Rate limit reached. Try again in 1.0s.", 1.0)
        state.in_flight += 1
        self._leases.setdefault(tenant_id, set()).add(lease_id)
        self._start_renewing()
        return Slot(tenant_id, lease_id)

    async def release(self, slot: Slot, unused_tokens: int) -> None:
        """The request ended: its lease goes and the tokens it reserved but did not use go back."""
        if slot.lease_id is None:
            return await self.fallback.release(slot, unused_tokens)
        leases = self._leases.get(slot.tenant_id, set())
        leases.discard(slot.lease_id)
        if not leases:
            self._leases.pop(slot.tenant_id, None)
        if self._is_down():
            return  # not renewed, the lease expires within lease_s
        _, tokens_key, leases_key = self._keys(slot.tenant_id)
        try:
            level = await self._release(keys=[tokens_key, leases_key], args=[slot.lease_id, unused_tokens,
                                                                             BUCKET_TTL_S])
        except RedisError as exc:
            self._went_down(exc)
            return
        state = self._seen.get(slot.tenant_id)
        if state is not None:
            state.in_flight = max(state.in_flight - 1, 0)
            if state.tokens is not None and level is not None:
                state.tokens.level = float(level)

    def headers(self, tenant_id: int) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers from the counters this process saw last (no Redis call)."""
        if self._is_down():
            return self.fallback.headers(tenant_id)
        state = self._seen.get(tenant_id)
        return state.headers() if state else {}

    async def in_flight(self, tenant_id: int) -> int:
        """Requests of the tenant in flight on every gateway (this one's alone while Redis is down)."""
        if not self._is_down():
            try:
                return int(await self._count(keys=[self._keys(tenant_id)[2]]))
            except RedisError as exc:
                self._went_down(exc)
        return await self.fallback.in_flight(tenant_id)

    async def close(self) -> None:
        """Stop renewing and disconnect; leases still held here expire within lease_s."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        await self.client.aclose()

    # -- leases ------------------------------------------------------------------------------------
    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self.renew_leases()

    async def renew_leases(self) -> None:
        """Push every lease held here `lease_s` into the future (Redis time)."""
        for tenant_id, lease_ids in list(self._leases.items()):
            try:
                await self._renew(keys=[self._keys(tenant_id)[2]], args=[self.lease_s, *lease_ids])
            except RedisError as exc:
                self._went_down(exc)
                return

    # -- outages -----------------------------------------------------------------------------------
    def _is_down(self) -> bool:
        return self._down_until is not None and self.clock() < self._down_until

    def _went_down(self, exc: RedisError) -> None:
        self._down_until = self.clock() + self.retry_s
        if not self._is_degraded:
            self._is_degraded = True
            log.warning("rate-limit store unreachable (%s): this gateway enforces its own per-process limits "
                        "until Redis answers again", exc)

    def _came_back(self) -> None:
        self._down_until = None
        if self._is_degraded:
            self._is_degraded = False
            log.info("rate-limit store answers again: limits are shared through Redis")


def _bucket(limit: int | None, level: bytes | None) -> TokenBucket | None:
    """A bucket as the script left it (its `updated_at` is unused: headers read level and limit only)."""
    if limit is None or level is None:
        return None
    return TokenBucket(float(limit), float(level), math.nan)
