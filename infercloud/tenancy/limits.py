"""Per-tenant rate limits (token buckets), concurrency caps and budgets, as this gateway sees them.

Token bucket: a bucket of `limit` units refills at `limit / 60` per second up to `limit`, so a tenant
may burst a whole minute's allowance and then goes at the steady rate. A request takes 1 unit of the
requests bucket and prompt + max new tokens of the tokens bucket when admitted (OpenAI's way of
counting); when it ends, the tokens it did not use go back. Both buckets must have room, else 429
with Retry-After (seconds until they will) and OpenAI's x-ratelimit-* headers.

Budget: spent (the ledger's sum for the period, plus every row priced since) plus the maximum cost
of each request in flight (reserved) must be below the budget for a request to be admitted. So when
many requests race, the last admitted can take the total past the budget by at most its own maximum
cost, and no more are admitted.

`RateLimiter` keeps the rate limits in this process: with several gateways, each enforces the full
limits, so N gateways admit up to N times a tenant's rate and concurrency. `tenancy.redis_url` shares
them instead (tenancy/redis_limits.py: the same interface and answers). Budget reservations stay
per process: each gateway may overshoot a budget by one request's maximum cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from infercloud.tenancy.errors import BudgetExceeded, RateLimited


@dataclass
class TokenBucket:
    limit: float                    # capacity, and units per minute
    level: float
    updated_at: float

    @classmethod
    def full(cls, limit: int, now: float) -> "TokenBucket":
        return cls(float(limit), float(limit), now)

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.updated_at) * self.limit / 60.0)
        self.updated_at = now

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` units are available (after refill); inf if it exceeds the capacity."""
        if amount > self.limit:
            return math.inf
        return max(amount - self.level, 0.0) * 60.0 / self.limit

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.limit - self.level) * 60.0 / self.limit


@dataclass(frozen=True)
class Slot:
    """An admitted request's hold on its tenant's limits, handed back to `release`."""

    tenant_id: int
    lease_id: str | None = None     # its lease in Redis (redis_limits.py); None: held in this process


@dataclass
class TenantLimits:
    """One tenant's limits as numbers (None: unlimited) and its live counters."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    requests: TokenBucket | None = None
    tokens: TokenBucket | None = None
    in_flight: int = 0

    def refusal(self, tokens: int) -> RateLimited | None:
        """Why 1 request, `tokens` tokens and a slot may not be taken now (buckets refilled), or None."""
        concurrent, tpm = self.max_concurrent, self.tokens_per_minute
        if concurrent is not None and self.in_flight >= concurrent:
            return RateLimited(f"Too many concurrent requests: your limit is {concurrent}. Wait for one to finish.",
                               1.0, "concurrency_limit_exceeded")
        if self.tokens is not None and tokens > self.tokens.limit:
            return RateLimited(f"Request too large: it may use {tokens} tokens (prompt + max_tokens), more than "
                               f"your limit of {tpm} tokens per minute. Lower max_tokens or the prompt.", 60.0)
        waits = []
        if self.requests is not None and self.requests.level < 1:
            waits.append(("requests", self.requests_per_minute, self.requests.wait_s(1)))
        if self.tokens is not None and self.tokens.level < tokens:
            waits.append(("tokens", tpm, self.tokens.wait_s(tokens)))
        if not waits:
            return None
        what, limit, _ = waits[0]
        wait = max(w for *_, w in waits)
        return RateLimited(f"Rate limit reached for {what} per minute: limit {limit}. Try again in {wait:.1f}s.", wait)

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for these counters."""
        headers: dict[str, str] = {}
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.limit))
                headers[f"x-ratelimit-remaining-{name}"] = str(max(int(bucket.level), 0))
                headers[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_s())
        return headers


class Limiter(Protocol):
    """What admission needs of a rate limiter: this process's `RateLimiter` or the shared `RedisRateLimiter`."""

    async def acquire(self, tenant_id: int, rpm: int | None, tpm: int | None, concurrent: int | None,
                      tokens: int) -> Slot: ...

    async def release(self, slot: Slot, unused_tokens: int) -> None: ...

    def headers(self, tenant_id: int) -> dict[str, str]: ...

    async def in_flight(self, tenant_id: int) -> int: ...

    async def close(self) -> None: ...


class RateLimiter:
    """Rate limits and concurrency counts in this process's memory."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._tenants: dict[int, TenantLimits] = {}

    def _limits(self, tenant_id: int, rpm: int | None, tpm: int | None, concurrent: int | None) -> TenantLimits:
        now = self.clock()
        state = self._tenants.get(tenant_id)
        if state is None or (state.requests_per_minute, state.tokens_per_minute) != (rpm, tpm):
            state = TenantLimits(rpm, tpm, concurrent, TokenBucket.full(rpm, now) if rpm else None,
                                 TokenBucket.full(tpm, now) if tpm else None, state.in_flight if state else 0)
            self._tenants[tenant_id] = state
        state.max_concurrent = concurrent
        for bucket in (state.requests, state.tokens):
            if bucket is not None:
                bucket.refill(now)
        return state

    async def acquire(self, tenant_id: int, rpm: int | None, tpm: int | None, concurrent: int | None,
                      tokens: int) -> Slot:
        """Take 1 request, `tokens` tokens and a concurrency slot, or raise RateLimited taking nothing."""
        state = self._limits(tenant_id, rpm, tpm, concurrent)
        refusal = state.refusal(tokens)
        if refusal is not None:
            raise refusal
        if state.requests is not None:
            state.requests.level -= 1
        if state.tokens is not None:
            state.tokens.level -= tokens
        state.in_flight += 1
        return Slot(tenant_id)

    async def release(self, slot: Slot, unused_tokens: int) -> None:
        """The request ended: its slot frees and the tokens it reserved but did not use go back."""
        state = self._tenants.get(slot.tenant_id)
        if state is None:
            return
        state.in_flight -= 1
        if state.tokens is not None and unused_tokens > 0:
            state.tokens.refill(self.clock())
            state.tokens.level = min(state.tokens.limit, state.tokens.level + unused_tokens)

    def headers(self, tenant_id: int) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the tenant's current state."""
        state = self._tenants.get(tenant_id)
        return state.headers() if state else {}

    async def in_flight(self, tenant_id: int) -> int:
        state = self._tenants.get(tenant_id)
        return state.in_flight if state else 0

    async def close(self) -> None:
        pass


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`, `120ms`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    seconds = math.ceil(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass
class _Spend:
    period_start: object            # the period this spend belongs to (a datetime, or None for total)
    spent: float
    reserved: float = 0.0


class Budgets:
    """Spend per tenant in its current period, plus reservations of requests in flight."""

    def __init__(self) -> None:
        self._spend: dict[int, _Spend] = {}

    def is_loaded(self, tenant_id: int, period_start) -> bool:
        spend = self._spend.get(tenant_id)
        return spend is not None and spend.period_start == period_start

    def load(self, tenant_id: int, period_start, spent: float) -> None:
        reserved = self._spend[tenant_id].reserved if tenant_id in self._spend else 0.0
        self._spend[tenant_id] = _Spend(period_start, spent, reserved)

    def reserve(self, tenant_id: int, budget: float, max_cost: float) -> None:
        spend = self._spend[tenant_id]
        if spend.spent + spend.reserved >= budget:
            raise BudgetExceeded(f"You exceeded your budget of ${budget:.4f} for this period "
                                 f"(spent ${spend.spent:.4f}).")
        spend.reserved += max_cost

    def settle(self, tenant_id: int, max_cost: float) -> None:
        """A request's reservation ends (its actual cost arrives through `charge`)."""
        spend = self._spend.get(tenant_id)
        if spend is not None:
            spend.reserved = max(spend.reserved - max_cost, 0.0)

    def charge(self, tenant_id: int, cost: float) -> None:
        spend = self._spend.get(tenant_id)
        if spend is not None:
            spend.spent += cost

    def spent(self, tenant_id: int) -> float | None:
        spend = self._spend.get(tenant_id)
        return spend.spent if spend else None
