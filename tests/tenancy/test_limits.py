"""Rate limits on a fake clock (token buckets, concurrency, x-ratelimit headers) and budget reservations."""

from __future__ import annotations

import asyncio
import math

import pytest

from infercloud.tenancy.errors import BudgetExceeded, RateLimited
from infercloud.tenancy.limits import Budgets, RateLimiter, Slot, TokenBucket, format_duration
from tests.tenancy.fakes import FakeClock

T = 7  # a tenant id


class _Sync:
    """A RateLimiter whose coroutines run to completion at each call (none of them waits on anything)."""

    def __init__(self, limiter: RateLimiter):
        self.limiter = limiter

    def acquire(self, tenant_id: int, **kwargs) -> Slot:
        return asyncio.run(self.limiter.acquire(tenant_id, **kwargs))

    def release(self, tenant_id: int, unused_tokens: int) -> None:
        asyncio.run(self.limiter.release(Slot(tenant_id), unused_tokens))

    def in_flight(self, tenant_id: int) -> int:
        return asyncio.run(self.limiter.in_flight(tenant_id))

    def headers(self, tenant_id: int) -> dict[str, str]:
        return self.limiter.headers(tenant_id)


def _limiter() -> tuple[_Sync, FakeClock]:
    clock = FakeClock()
    return _Sync(RateLimiter(clock)), clock


# -- token bucket ----------------------------------------------------------------------------------
def test_bucket_refills_at_limit_per_minute_up_to_its_capacity():
    bucket = TokenBucket.full(60, now=0.0)
    bucket.level = 0.0
    bucket.refill(10.0)
    assert bucket.level == pytest.approx(10.0)
    assert bucket.wait_s(15) == pytest.approx(5.0) and bucket.reset_s() == pytest.approx(50.0)
    bucket.refill(1000.0)
    assert bucket.level == 60.0 and bucket.reset_s() == 0.0 and bucket.wait_s(60) == 0.0
    assert bucket.wait_s(61) == math.inf


# -- requests per minute ---------------------------------------------------------------------------
def test_burst_of_a_minutes_allowance_then_429_until_refilled():
    limiter, clock = _limiter()
    for _ in range(6):
        limiter.acquire(T, rpm=6, tpm=None, concurrent=None, tokens=0)
    with pytest.raises(RateLimited) as exc:
        limiter.acquire(T, rpm=6, tpm=None, concurrent=None, tokens=0)
    assert exc.value.code == "rate_limit_exceeded"
    assert exc.value.retry_after_s == pytest.approx(10.0)  # one request refills in 60 / 6 s
    clock.advance(9.9)
    with pytest.raises(RateLimited) as exc:
        limiter.acquire(T, rpm=6, tpm=None, concurrent=None, tokens=0)
    assert exc.value.retry_after_s == pytest.approx(0.1)
    clock.advance(0.1)
    limiter.acquire(T, rpm=6, tpm=None, concurrent=None, tokens=0)


def test_a_refused_request_takes_nothing():
    limiter, _ = _limiter()
    limiter.acquire(T, rpm=1, tpm=100, concurrent=None, tokens=10)
    with pytest.raises(RateLimited):
        limiter.acquire(T, rpm=1, tpm=100, concurrent=None, tokens=10)
    assert limiter.in_flight(T) == 1
    assert limiter.headers(T)["x-ratelimit-remaining-tokens"] == "90"


def test_tenants_have_separate_buckets():
    limiter, _ = _limiter()
    limiter.acquire(1, rpm=1, tpm=None, concurrent=None, tokens=0)
    limiter.acquire(2, rpm=1, tpm=None, concurrent=None, tokens=0)
    with pytest.raises(RateLimited):
        limiter.acquire(1, rpm=1, tpm=None, concurrent=None, tokens=0)


# -- tokens per minute -----------------------------------------------------------------------------
def test_tokens_are_charged_on_acquire_and_unused_ones_returned_on_release():
    limiter, clock = _limiter()
    limiter.acquire(T, rpm=None, tpm=1000, concurrent=None, tokens=600)
    assert limiter.headers(T)["x-ratelimit-remaining-tokens"] == "400"
    with pytest.raises(RateLimited) as exc:
        limiter.acquire(T, rpm=None, tpm=1000, concurrent=None, tokens=500)
    assert exc.value.retry_after_s == pytest.approx(100 * 60 / 1000)  # 100 tokens short at 1000/min
    limiter.release(T, unused_tokens=450)  # the request used 150 of its 600
    assert limiter.headers(T)["x-ratelimit-remaining-tokens"] == "850"
    limiter.acquire(T, rpm=None, tpm=1000, concurrent=None, tokens=500)
    clock.advance(60)
    limiter.release(T, unused_tokens=500)
    assert limiter.headers(T)["x-ratelimit-remaining-tokens"] == "1000", "returned tokens overflow the bucket"


def test_request_larger_than_the_tpm_capacity_is_refused():
    limiter, _ = _limiter()
    with pytest.raises(RateLimited, match="Request too large") as exc:
        limiter.acquire(T, rpm=None, tpm=1000, concurrent=None, tokens=1001)
    assert exc.value.retry_after_s == 60.0
    assert TokenBucket.full(1000, 0.0).wait_s(1001) == math.inf
    assert limiter.in_flight(T) == 0


# -- concurrency -----------------------------------------------------------------------------------
def test_concurrency_cap_then_release_frees_a_slot():
    limiter, _ = _limiter()
    limiter.acquire(T, rpm=None, tpm=None, concurrent=2, tokens=0)
    limiter.acquire(T, rpm=None, tpm=None, concurrent=2, tokens=0)
    with pytest.raises(RateLimited) as exc:
        limiter.acquire(T, rpm=None, tpm=None, concurrent=2, tokens=0)
    assert exc.value.code == "concurrency_limit_exceeded" and limiter.in_flight(T) == 2
    limiter.release(T, unused_tokens=0)
    limiter.acquire(T, rpm=None, tpm=None, concurrent=2, tokens=0)
    assert limiter.in_flight(T) == 2


def test_changed_limits_keep_the_in_flight_count():
    limiter, _ = _limiter()
    limiter.acquire(T, rpm=10, tpm=None, concurrent=1, tokens=0)
    with pytest.raises(RateLimited):
        limiter.acquire(T, rpm=20, tpm=None, concurrent=1, tokens=0)  # new rpm: new buckets, same in-flight


# -- headers ---------------------------------------------------------------------------------------
def test_headers_use_openais_names():
    limiter, clock = _limiter()
    assert limiter.headers(T) == {}
    limiter.acquire(T, rpm=60, tpm=6000, concurrent=None, tokens=600)
    assert limiter.headers(T) == {
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "5400",
        "x-ratelimit-reset-tokens": "6s",
    }
    limiter.acquire(T, rpm=60, tpm=6000, concurrent=None, tokens=5400)
    clock.advance(0.5)
    limiter.acquire(T, rpm=60, tpm=6000, concurrent=None, tokens=0)  # refills, and takes a request
    headers = limiter.headers(T)
    assert headers["x-ratelimit-remaining-tokens"] == "50" and headers["x-ratelimit-reset-tokens"] == "1m0s"
    assert headers["x-ratelimit-remaining-requests"] == "57"
    assert headers["x-ratelimit-reset-requests"] == "3s"  # 2.5 requests short at 1 a second, rounded up


def test_headers_name_only_the_limits_a_tenant_has():
    limiter, _ = _limiter()
    limiter.acquire(T, rpm=10, tpm=None, concurrent=None, tokens=5)
    assert set(limiter.headers(T)) == {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                                       "x-ratelimit-reset-requests"}


@pytest.mark.parametrize("seconds, text", [
    (1.0, "1s"), (360, "6m0s"), (3723, "1h2m3s"), (0.12, "120ms"), (0.0, "0ms"), (0.5, "500ms"),
    (1.2, "2s"), (59.5, "1m0s"), (3600, "1h0m0s"), (7322, "2h2m2s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# -- budgets ---------------------------------------------------------------------------------------
def test_reserve_below_budget_and_refused_once_spent_plus_reserved_reaches_it():
    budgets = Budgets()
    budgets.load(T, None, spent=0.5)
    assert budgets.is_loaded(T, None) and budgets.spent(T) == 0.5
    budgets.reserve(T, budget=1.0, max_cost=0.3)
    budgets.reserve(T, budget=1.0, max_cost=0.2)   # 0.8 < 1.0 before this one
    with pytest.raises(BudgetExceeded, match="budget"):
        budgets.reserve(T, budget=1.0, max_cost=0.01)  # 0.5 + 0.5 >= 1.0
    budgets.settle(T, 0.3)                          # a request ended having cost nothing
    budgets.reserve(T, budget=1.0, max_cost=0.01)
    budgets.charge(T, 0.5)
    assert budgets.spent(T) == pytest.approx(1.0)


def test_budget_is_refused_once_spent():
    budgets = Budgets()
    budgets.load(T, None, spent=2.0)
    with pytest.raises(BudgetExceeded):
        budgets.reserve(T, budget=2.0, max_cost=0.0)


def test_reload_for_a_new_period_keeps_reservations():
    budgets = Budgets()
    budgets.load(T, "day-1", spent=0.9)
    budgets.reserve(T, budget=1.0, max_cost=0.05)
    assert not budgets.is_loaded(T, "day-2")
    budgets.load(T, "day-2", spent=0.0)
    assert budgets.is_loaded(T, "day-2") and budgets.spent(T) == 0.0
    budgets.reserve(T, budget=0.06, max_cost=0.01)
    with pytest.raises(BudgetExceeded):
        budgets.reserve(T, budget=0.06, max_cost=0.01)  # 0.05 + 0.01 reserved


@pytest.mark.parametrize("spent0, max_cost", [(0.0, 0.07), (0.95, 0.3), (0.5, 0.001), (0.999, 5.0)])
def test_concurrent_reservations_overshoot_the_budget_by_at_most_one_max_cost(spent0, max_cost):
    budget, budgets = 1.0, Budgets()
    budgets.load(T, None, spent=spent0)
    admitted = 0
    while True:
        try:
            budgets.reserve(T, budget, max_cost)
        except BudgetExceeded:
            break
        admitted += 1
        assert admitted < 10_000
    assert admitted >= 1
    for _ in range(admitted):  # every request costs the most it can, then ends
        budgets.charge(T, max_cost)
        budgets.settle(T, max_cost)
    assert budgets.spent(T) - budget <= max_cost + 1e-12
    with pytest.raises(BudgetExceeded):
        budgets.reserve(T, budget, max_cost)


def test_charges_and_settles_for_unknown_tenants_are_ignored():
    budgets = Budgets()
    budgets.charge(99, 1.0)
    budgets.settle(99, 1.0)
    assert budgets.spent(99) is None
