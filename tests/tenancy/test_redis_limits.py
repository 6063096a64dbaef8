"""Rate limits shared through a real Redis: buckets on server time, 429s, concurrency across two limiters
(two gateways) under concurrent acquires, leases of a dead gateway, and falling back when Redis is down."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from infercloud.tenancy.errors import RateLimited
from infercloud.tenancy.limits import RateLimiter, Slot
from infercloud.tenancy.redis_limits import RedisRateLimiter

T = 7  # a tenant id


def _run_with(url: str, test, count: int = 1, **kwargs) -> None:
    """Run `test(*limiters)` with `count` limiters on one Redis and one key prefix (gateways of one cloud)."""
    prefix = f"test:{uuid.uuid4().hex[:8]}"

    async def main():
        limiters = [RedisRateLimiter.from_url(url, time.monotonic, prefix=prefix, **kwargs) for _ in range(count)]
        try:
            await test(*limiters)
        finally:
            for limiter in limiters:
                await limiter.close()

    asyncio.run(main())


async def _refused(limiter, **limits) -> RateLimited:
    with pytest.raises(RateLimited) as exc:
        await limiter.acquire(T, **limits)
    return exc.value


async def _admitted(limiters, attempts: int, **limits) -> list[Slot]:
    """`attempts` acquires at once, spread over the limiters; the slots of those admitted."""
    async def one(i: int) -> Slot | None:
        try:
            return await limiters[i % len(limiters)].acquire(T, **limits)
        except RateLimited as exc:
            assert exc.code in ("rate_limit_exceeded", "concurrency_limit_exceeded")
            return None

    return [slot for slot in await asyncio.gather(*(one(i) for i in range(attempts))) if slot is not None]


# -- buckets ---------------------------------------------------------------------------------------
def test_burst_then_429_with_retry_after_and_headers_then_refilled_on_server_time(redis_url):
    async def test(limiter):
        limits = dict(rpm=60, tpm=None, concurrent=None, tokens=0)  # one request a second
        for _ in range(60):
            await limiter.acquire(T, **limits)
        refused = await _refused(limiter, **limits)
        assert refused.code == "rate_limit_exceeded" and str(refused).startswith("Rate limit reached for requests")
        assert refused.retry_after_s == pytest.approx(1.0, abs=0.1)
        headers = limiter.headers(T)
        assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("60", "0")
        assert headers["x-ratelimit-reset-requests"] == "1m0s"
        await asyncio.sleep(1.05)
        await limiter.acquire(T, **limits)
        await _refused(limiter, **limits)

    _run_with(redis_url, test)


def test_tokens_are_charged_on_acquire_and_unused_ones_returned_on_release(redis_url):
    async def test(limiter):
        limits = dict(rpm=None, tpm=1000, concurrent=None)
        slot = await limiter.acquire(T, tokens=600, **limits)
        assert limiter.headers(T)["x-ratelimit-remaining-tokens"] == "400"
        refused = await _refused(limiter, tokens=500, **limits)
        assert refused.retry_after_s == pytest.approx(100 * 60 / 1000, abs=0.1)  # 100 short at 1000/min
        await limiter.release(slot, unused_tokens=450)
        assert limiter.headers(T)["x-ratelimit-remaining-tokens"] == "850"
        await limiter.acquire(T, tokens=500, **limits)
        too_large = await _refused(limiter, tokens=1001, **limits)
        assert "Request too large" in str(too_large) and too_large.retry_after_s == 60.0
        assert await limiter.in_flight(T) == 1

    _run_with(redis_url, test)


def test_gives_the_same_answers_as_the_per_process_limiter(redis_url):
    # admitted, admitted, too many at once, tokens back, admitted, too many, too large, tokens short,
    # admitted (no tokens), then requests short
    steps = [("acquire", 30), ("acquire", 30), ("acquire", 30), ("release", 10), ("acquire", 50),
             ("acquire", 20), ("release", 0), ("acquire", 200), ("acquire", 1), ("acquire", 0), ("release", 0),
             ("acquire", 0)]

    async def answers(limiter) -> list:
        seen, slots = [], []
        for step, tokens in steps:
            if step == "release":
                await limiter.release(slots.pop(0), tokens)
                seen.append(limiter.headers(T))
                continue
            try:
                slots.append(await limiter.acquire(T, rpm=4, tpm=100, concurrent=2, tokens=tokens))
                seen.append(limiter.headers(T))
            except RateLimited as exc:
                seen.append((str(exc), exc.code, round(exc.retry_after_s), limiter.headers(T)))
        return seen

    async def test(limiter):
        assert await answers(limiter) == await answers(RateLimiter(time.monotonic))

    _run_with(redis_url, test)


# -- two gateways ----------------------------------------------------------------------------------
def test_two_gateways_never_admit_more_than_the_concurrency_cap_together(redis_url):
    async def test(a, b):
        limits = dict(rpm=None, tpm=None, concurrent=5, tokens=0)
        admitted = await _admitted([a, b], 60, **limits)
        assert len(admitted) == 5
        assert await a.in_flight(T) == await b.in_flight(T) == 5
        await asyncio.gather(*(a.release(s, 0) if s.lease_id.startswith(a._lease_prefix) else b.release(s, 0)
                               for s in admitted))
        assert await a.in_flight(T) == 0
        assert len(await _admitted([b, a], 60, **limits)) == 5

    _run_with(redis_url, test, count=2)


def test_two_gateways_admit_exactly_the_requests_per_minute_together(redis_url):
    async def test(a, b):
        admitted = await _admitted([a, b], 100, rpm=20, tpm=None, concurrent=None, tokens=0)
        assert len(admitted) == 20
        assert a.headers(T)["x-ratelimit-remaining-requests"] == "0" or b.headers(T)[
            "x-ratelimit-remaining-requests"] == "0"

    _run_with(redis_url, test, count=2)


# -- leases ----------------------------------------------------------------------------------------
def test_a_dead_gateways_slots_come_back_once_their_leases_expire(redis_url):
    async def test(dead, alive):
        limits = dict(rpm=None, tpm=None, concurrent=2, tokens=0)
        await dead.acquire(T, **limits)
        await dead.acquire(T, **limits)
        await dead.close()                       # dies: its requests never end, nobody renews their leases
        assert (await _refused(alive, **limits)).code == "concurrency_limit_exceeded"
        await asyncio.sleep(0.7)
        await alive.acquire(T, **limits)
        assert await alive.in_flight(T) == 1

    _run_with(redis_url, test, count=2, lease_s=0.6)


def test_a_live_gateway_keeps_its_slots_past_the_lease_by_renewing_them(redis_url):
    async def test(a, b):
        limits = dict(rpm=None, tpm=None, concurrent=1, tokens=0)
        slot = await a.acquire(T, **limits)
        await asyncio.sleep(1.0)                 # more than three leases; renewed every 0.1 s
        assert (await _refused(b, **limits)).code == "concurrency_limit_exceeded"
        await a.release(slot, 0)
        await b.acquire(T, **limits)

    _run_with(redis_url, test, count=2, lease_s=0.3)


# -- outages ---------------------------------------------------------------------------------------
def test_redis_down_falls_back_to_per_process_limits_then_shares_again(own_redis, caplog):
    caplog.set_level(logging.INFO, logger="infercloud.tenancy")
    limits = dict(rpm=None, tpm=None, concurrent=1, tokens=0)

    async def test(limiter):
        shared = await limiter.acquire(T, **limits)
        assert shared.lease_id is not None
        own_redis.stop()
        local = await limiter.acquire(T, **limits)          # fail open: this process's own count
        assert local.lease_id is None and await limiter.in_flight(T) == 1
        assert (await _refused(limiter, **limits)).code == "concurrency_limit_exceeded"
        await limiter.release(shared, 0)                   # no error; the lease would expire
        await limiter.release(local, 0)
        assert await limiter.in_flight(T) == 0
        own_redis.start()                                  # empty: the old lease is gone with the data
        await asyncio.sleep(0.25)                          # retry_s
        assert (await limiter.acquire(T, **limits)).lease_id is not None
        assert (await _refused(limiter, **limits)).code == "concurrency_limit_exceeded"

    _run_with(own_redis.url, test, retry_s=0.2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "per-process limits" in warnings[0].getMessage()
    assert any("answers again" in r.getMessage() for r in caplog.records)
