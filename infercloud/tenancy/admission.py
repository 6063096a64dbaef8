"""Auth and admission: who is asking (API key -> tenant), may they call this model at this tier, and now?

Order of checks for a /v1 request, each refused with a tenancy/errors.py error (which the gateway answers
with the OpenAI status and error shape below, gateway/errors.py):
  1. key: missing or malformed, unknown, revoked or expired -> 401 (`invalid_api_key`);
  2. model the tenant may not use -> 403 (`model_not_allowed`); a tier above the tenant's -> 403;
  3. max_tokens above the tenant's cap -> 400 (`max_tokens_exceeds_limit`); none given -> the cap;
  4. concurrency, then requests and tokens per minute -> 429 + Retry-After + x-ratelimit-*;
  5. budget spent for the period -> 429 `insufficient_quota`.
Verified keys are cached for `cache_s`; revoking through the admin API drops the entry at once, a
revocation made by another process (the CLI) is seen within `cache_s`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from infercloud.config import TIERS
from infercloud.metering.reports import period_start
from infercloud.tenancy.errors import InvalidRequest, NotPermitted, RateLimited, Unauthenticated
from infercloud.tenancy.limits import Budgets, Limiter, Slot
from infercloud.tenancy.store import ApiKey, Tenant, TenantStore, hash_key

# vLLM's convention for the `priority` request field: lower is served first.
TIER_PRIORITY = {"interactive": 0, "standard": 1, "batch": 2}
# OpenAI's `service_tier` values, as tiers (None: the tenant's own).
TIER_ALIASES = {"auto": None, "default": None, "priority": "interactive", "flex": "batch", "scale": "interactive"}


@dataclass(frozen=True)
class Principal:
    tenant: Tenant
    key: ApiKey


@dataclass
class Ticket:
    """An admitted request's claims on its tenant's limits, given back by `Admission.release`."""

    principal: Principal
    model: str
    tier: str
    tokens_reserved: int
    max_cost: float
    budgeted: bool
    slot: Slot

    @property
    def priority(self) -> int:
        return TIER_PRIORITY[self.tier]


class Authenticator:
    def __init__(self, store: TenantStore, cache_s: float, clock: Callable[[], float],
                 now_utc: Callable[[], dt.datetime]):
        self.store = store
        self.cache_s = cache_s
        self.clock = clock
        self.now_utc = now_utc
        self._cache: dict[str, tuple[Principal, float]] = {}  # key hash -> (principal, trusted until)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
                                  code="missing_api_key")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthenticated("Malformed Authorization header: expected `Bearer <key>`.")
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and self.clock() < cached[1] and cached[0].key.is_valid(self.now_utc()):
            return cached[0]
        found = await asyncio.to_thread(self.store.verify, key, self.now_utc())
        if found is None:
            self._cache.pop(digest, None)
            raise Unauthenticated(f"Incorrect API key provided: {_masked(key)}. It may be wrong, revoked or expired.")
        principal = Principal(*found)
        if self.cache_s > 0:
            self._cache[digest] = (principal, self.clock() + self.cache_s)
        return principal

    def forget(self, key_id: int | None = None, tenant_id: int | None = None) -> None:
        """Drop cached keys (one key, or every key of a tenant) after a revocation or a tenant change."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key.id == key_id or principal.tenant.id == tenant_id:
                del self._cache[digest]


class Admission:
    def __init__(self, limiter: Limiter, budgets: Budgets,
                 load_spent: Callable[[int, dt.datetime | None], Awaitable[float]],
                 now_utc: Callable[[], dt.datetime]):
        self.limiter = limiter
        self.budgets = budgets
        self.load_spent = load_spent
        self.now_utc = now_utc

    @staticmethod
    def resolve_tier(tenant: Tenant, requested: object) -> str:
        """The tier a request runs at: the one it asks for, up to the tenant's; default the tenant's."""
        if requested is None:
            return tenant.spec.tier
        if not isinstance(requested, str) or (requested not in TIERS and requested not in TIER_ALIASES):
            raise InvalidRequest(f"Invalid service_tier {requested!r}: use one of {', '.join(TIERS)} "
                                 f"(or OpenAI's {', '.join(TIER_ALIASES)}).", param="service_tier")
        tier = TIER_ALIASES.get(requested, requested) or tenant.spec.tier
        if TIER_PRIORITY[tier] < TIER_PRIORITY[tenant.spec.tier]:
            raise NotPermitted(f"Tenant {tenant.name!r} may use tiers up to {tenant.spec.tier!r}, not {tier!r}.",
                               "tier_not_allowed", param="service_tier")
        return tier

    @staticmethod
    def check_model(tenant: Tenant, model: str) -> None:
        if not tenant.may_use(model):
            raise NotPermitted(f"Tenant {tenant.name!r} may not use the model `{model}`.", "model_not_allowed",
                               param="model")

    @staticmethod
    def cap_max_tokens(tenant: Tenant, requested: int | None) -> int | None:
        """The max_tokens to send: the request's (if within the tenant's cap), else the cap; None: unset."""
        cap = tenant.spec.max_tokens_per_request
        if cap is not None and requested is not None and requested > cap:
            raise InvalidRequest(f"max_tokens is {requested}, above your limit of {cap} tokens per request.",
                                 "max_tokens_exceeds_limit", param="max_tokens")
        return requested if requested is not None else cap

    async def admit(self, principal: Principal, model: str, tier: str, tokens: int, max_cost: float) -> Ticket:
        """Take the request's claims (rate, concurrency, budget), or raise BudgetExceeded or RateLimited (429s)
        having taken none."""
        tenant = principal.tenant
        spec = tenant.spec
        budgeted = spec.budget_usd is not None
        if budgeted:
            start = period_start(spec.budget_period, self.now_utc())
            if not self.budgets.is_loaded(tenant.id, start):
                self.budgets.load(tenant.id, start, await self.load_spent(tenant.id, start))
            self.budgets.reserve(tenant.id, spec.budget_usd, max_cost)
        try:
            slot = await self.limiter.acquire(tenant.id, spec.requests_per_minute, spec.tokens_per_minute,
                                              spec.max_concurrent, tokens)
        except RateLimited as exc:
            if budgeted:
                self.budgets.settle(tenant.id, max_cost)
            raise RateLimited(exc.message, exc.retry_after_s, exc.code, self.limiter.headers(tenant.id)) from None
        return Ticket(principal, model, tier, tokens, max_cost, budgeted, slot)

    def headers(self, principal: Principal) -> dict[str, str]:
        return self.limiter.headers(principal.tenant.id)


def _masked(key: str) -> str:
    return key[:10] + "*" * 4 + key[-4:] if len(key) > 16 else "***"
