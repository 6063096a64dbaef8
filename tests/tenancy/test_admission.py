"""Auth and admission against a real store: tiers, models, max_tokens caps, the key cache, 429s."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from infercloud.config import TenantSpec
from infercloud.tenancy.admission import Admission, Authenticator, Principal
from infercloud.tenancy.errors import (BudgetExceeded, InvalidRequest, NotPermitted, RateLimited, Refused,
                                       Unauthenticated)
from infercloud.tenancy.limits import Budgets, RateLimiter
from infercloud.tenancy.store import Tenant, TenantStore
from tests.tenancy.fakes import FakeClock, FakeUtc


def _tenant(**spec) -> Tenant:
    return Tenant(1, TenantSpec("acme", **spec), dt.datetime(2026, 1, 1))


def _refusal(call, *args) -> Refused:
    with pytest.raises(Refused) as exc:
        call(*args)
    return exc.value


# -- tier ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("own, requested, expected", [
    ("standard", None, "standard"), ("standard", "standard", "standard"), ("standard", "batch", "batch"),
    ("interactive", "standard", "standard"), ("interactive", "batch", "batch"),
    ("batch", "auto", "batch"), ("standard", "default", "standard"), ("interactive", "priority", "interactive"),
    ("standard", "flex", "batch"),
])
def test_resolve_tier(own, requested, expected):
    assert Admission.resolve_tier(_tenant(tier=own), requested) == expected


@pytest.mark.parametrize("own, requested", [("standard", "interactive"), ("batch", "standard"),
                                            ("standard", "priority"), ("batch", "scale")])
def test_a_tier_above_the_tenants_is_forbidden(own, requested):
    error = _refusal(Admission.resolve_tier, _tenant(tier=own), requested)
    assert (type(error), error.code, error.param) == (NotPermitted, "tier_not_allowed", "service_tier")


@pytest.mark.parametrize("requested", ["gold", "", 1, ["batch"], "Batch"])
def test_an_unknown_tier_is_a_bad_request(requested):
    error = _refusal(Admission.resolve_tier, _tenant(), requested)
    assert (type(error), error.code, error.param) == (InvalidRequest, None, "service_tier")


# -- model and max_tokens --------------------------------------------------------------------------
def test_check_model():
    Admission.check_model(_tenant(), "any-model")
    Admission.check_model(_tenant(models=("a", "b")), "b")
    error = _refusal(Admission.check_model, _tenant(models=("a",)), "b")
    assert (type(error), error.code, error.param) == (NotPermitted, "model_not_allowed", "model")


def test_cap_max_tokens():
    capped = _tenant(max_tokens_per_request=100)
    assert Admission.cap_max_tokens(capped, 100) == 100
    assert Admission.cap_max_tokens(capped, 5) == 5
    assert Admission.cap_max_tokens(capped, None) == 100
    error = _refusal(Admission.cap_max_tokens, capped, 101)
    assert (type(error), error.code, error.param) == (InvalidRequest, "max_tokens_exceeds_limit", "max_tokens")
    assert Admission.cap_max_tokens(_tenant(), 1_000_000) == 1_000_000
    assert Admission.cap_max_tokens(_tenant(), None) is None


# -- authentication --------------------------------------------------------------------------------
@pytest.fixture
def store(engine) -> TenantStore:
    store = TenantStore(engine)
    store.create_tenant(TenantSpec("acme"))
    return store


def _auth(store, cache_s: float = 5.0) -> tuple[Authenticator, FakeClock, FakeUtc]:
    clock, utc = FakeClock(), FakeUtc()
    return Authenticator(store, cache_s, clock, utc), clock, utc


def _authenticate(auth: Authenticator, header: str | None) -> Principal:
    return asyncio.run(auth.authenticate(header))


def _auth_error(auth: Authenticator, header: str | None) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as exc:
        _authenticate(auth, header)
    return exc.value


def test_a_valid_bearer_key_authenticates(store):
    key, record = store.create_key("acme")
    auth, _, _ = _auth(store)
    principal = _authenticate(auth, f"Bearer {key}")
    assert principal.tenant.name == "acme" and principal.key.id == record.id
    assert _authenticate(auth, f"bearer   {key}  ").key.id == record.id


def test_missing_malformed_and_wrong_keys_are_401(store):
    key, _ = store.create_key("acme")
    auth, _, _ = _auth(store)
    assert _auth_error(auth, None).code == "missing_api_key"
    assert _auth_error(auth, "").code == "missing_api_key"
    assert _auth_error(auth, f"Basic {key}").message.startswith("Malformed")
    assert _auth_error(auth, "Bearer").message.startswith("Malformed")
    wrong = _auth_error(auth, f"Bearer {key[:-1]}{'x' if key[-1] != 'x' else 'y'}")
    assert wrong.code == "invalid_api_key" and key not in wrong.message


def test_a_key_expired_by_the_injected_utc_clock_is_refused(store):
    key, _ = store.create_key("acme", expires_at=dt.datetime(2026, 11, 15, 12, 0, 10))
    auth, _, utc = _auth(store, cache_s=60.0)
    _authenticate(auth, f"Bearer {key}")
    utc.advance(10)
    assert _auth_error(auth, f"Bearer {key}").code == "invalid_api_key", "the cache outlived the key's expiry"


def test_a_revoked_key_works_from_cache_until_cache_s_passes(store):
    key, record = store.create_key("acme")
    auth, clock, _ = _auth(store, cache_s=5.0)
    _authenticate(auth, f"Bearer {key}")
    store.revoke_key(record.id)  # e.g. by the CLI, another process
    clock.advance(4.9)
    assert _authenticate(auth, f"Bearer {key}").key.id == record.id
    clock.advance(0.1)
    assert _auth_error(auth, f"Bearer {key}").code == "invalid_api_key"


@pytest.mark.parametrize("how", ["key_id", "tenant_id"])
def test_forget_drops_a_revoked_key_at_once(store, how):
    key, record = store.create_key("acme")
    auth, _, _ = _auth(store, cache_s=3600.0)
    _authenticate(auth, f"Bearer {key}")
    store.revoke_key(record.id)
    auth.forget(**{how: record.id if how == "key_id" else record.tenant_id})
    assert _auth_error(auth, f"Bearer {key}").code == "invalid_api_key"


def test_no_cache_when_cache_s_is_zero(store):
    key, record = store.create_key("acme")
    auth, _, _ = _auth(store, cache_s=0.0)
    _authenticate(auth, f"Bearer {key}")
    store.revoke_key(record.id)
    _auth_error(auth, f"Bearer {key}")


# -- admit -----------------------------------------------------------------------------------------
def _admission(spent: float = 0.0) -> tuple[Admission, list]:
    calls: list = []

    async def load_spent(tenant_id: int, since: dt.datetime | None) -> float:
        calls.append((tenant_id, since))
        return spent

    return Admission(RateLimiter(FakeClock()), Budgets(), load_spent, FakeUtc()), calls


def _principal(**spec) -> Principal:
    return Principal(_tenant(**spec), None)  # admit() does not look at the key


def _admit(admission: Admission, principal: Principal, tokens: int = 10, max_cost: float = 0.01):
    return asyncio.run(admission.admit(principal, "m", "standard", tokens, max_cost))


def test_admit_returns_a_ticket_and_429s_past_the_rpm():
    admission, _ = _admission()
    principal = _principal(requests_per_minute=2, tokens_per_minute=100)
    ticket = _admit(admission, principal)
    assert (ticket.tier, ticket.tokens_reserved, ticket.priority, ticket.budgeted) == ("standard", 10, 1, False)
    _admit(admission, principal)
    with pytest.raises(RateLimited) as exc:
        _admit(admission, principal)
    error = exc.value
    assert (error.code, error.retry_after_s) == ("rate_limit_exceeded", 30.0)
    assert error.headers["x-ratelimit-limit-requests"] == "2"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-remaining-tokens"] == "80"


def test_admit_loads_the_budget_period_spend_once():
    admission, calls = _admission(spent=0.0)
    principal = _principal(budget_usd=1.0, budget_period="month")
    _admit(admission, principal)
    _admit(admission, principal)
    assert calls == [(1, dt.datetime(2026, 11, 1))]


def test_admit_429s_insufficient_quota_when_the_budget_is_spent():
    admission, calls = _admission(spent=5.0)
    principal = _principal(budget_usd=5.0, budget_period="total", max_concurrent=1, tokens_per_minute=100)
    with pytest.raises(BudgetExceeded) as exc:
        _admit(admission, principal, tokens=40)
    assert exc.value.code == "insufficient_quota"
    assert calls == [(1, None)]
    assert asyncio.run(admission.limiter.in_flight(1)) == 0, "a refused request kept its concurrency slot"
    assert admission.headers(principal).get("x-ratelimit-remaining-tokens", "100") == "100"  # nothing taken


def test_a_budget_refusal_takes_no_request_from_the_rpm_bucket():
    admission, _ = _admission(spent=5.0)
    principal = _principal(budget_usd=5.0, requests_per_minute=10)
    with pytest.raises(BudgetExceeded, match="budget"):
        _admit(admission, principal)
    assert admission.headers(principal).get("x-ratelimit-remaining-requests", "10") == "10", (
        "BUG: admit() promises to 'raise 429 having taken none', but a request refused for its budget "
        "still used one unit of the tenant's requests-per-minute bucket")


def test_budget_reservations_stop_admission_at_the_budget():
    admission, _ = _admission(spent=0.0)
    principal = _principal(budget_usd=0.05)
    tickets = [_admit(admission, principal, max_cost=0.02) for _ in range(3)]  # 0, 0.02, 0.04 < 0.05
    assert all(t.budgeted for t in tickets)
    with pytest.raises(BudgetExceeded) as exc:
        _admit(admission, principal, max_cost=0.02)
    assert exc.value.code == "insufficient_quota"
