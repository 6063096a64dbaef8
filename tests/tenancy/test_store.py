"""TenantStore on real SQL: tenants, hashed API keys, verification, revocation and expiry."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from infercloud.config import TenantSpec
from infercloud.store.database import open_database, utcnow
from infercloud.store.schema import api_keys, tenants
from infercloud.tenancy.store import KEY_PREFIX, NotFound, TenancyError, TenantStore, hash_key, key_expiry


@pytest.fixture
def store(engine) -> TenantStore:
    return TenantStore(engine)


def _acme(store: TenantStore, **limits):
    return store.create_tenant(TenantSpec("acme", **limits))


# -- tenants ---------------------------------------------------------------------------------------
def test_create_list_and_find_tenants(store):
    acme = store.create_tenant(TenantSpec("acme", tier="interactive", models=("m1", "m2"), requests_per_minute=60,
                                          budget_usd=12.5, budget_period="day", cache_group="acme-team"))
    beta = store.create_tenant(TenantSpec("beta"))
    assert [t.name for t in store.list_tenants()] == ["acme", "beta"]
    found = store.find_tenant("acme")
    assert found == acme and store.find_tenant(acme.id) == acme
    assert found.spec == TenantSpec("acme", tier="interactive", models=("m1", "m2"), requests_per_minute=60,
                                    budget_usd=12.5, budget_period="day", cache_group="acme-team")
    assert found.may_use("m1") and not found.may_use("m3")
    assert beta.spec.models is None and beta.may_use("anything")
    assert store.find_tenant("nobody") is None and store.find_tenant(9999) is None
    with pytest.raises(TenancyError, match="no tenant"):
        store.tenant("nobody")


def test_duplicate_tenant_name_is_refused(store):
    _acme(store)
    with pytest.raises(TenancyError, match="already exists"):
        store.create_tenant(TenantSpec("acme", tier="batch"))
    assert len(store.list_tenants()) == 1


def test_upsert_updates_an_existing_tenants_limits(store):
    created = _acme(store, requests_per_minute=10)
    updated = store.upsert_tenant(TenantSpec("acme", tier="batch", requests_per_minute=99, models=("m1",)))
    assert updated.id == created.id and updated.created_at == created.created_at
    assert updated.spec.requests_per_minute == 99 and updated.spec.tier == "batch"
    assert updated.spec.models == ("m1",)
    assert len(store.list_tenants()) == 1


@pytest.mark.parametrize("spec, message", [
    (TenantSpec("x", tier="gold"), "tier"),
    (TenantSpec("x", budget_period="week"), "budget_period"),
    (TenantSpec("x", requests_per_minute=0), "requests_per_minute"),
    (TenantSpec("x", budget_usd=-1.0), "budget_usd"),
    (TenantSpec(""), "name"),
    (TenantSpec("x" * 101), "name"),
    (TenantSpec("a b"), "name"),
    (TenantSpec("x", max_concurrent=2**70), "max_concurrent"),
    (TenantSpec("x", tokens_per_minute=2**31), "tokens_per_minute"),
    (TenantSpec("x", budget_usd=float("nan")), "budget_usd"),
    (TenantSpec("x", budget_usd=float("inf")), "budget_usd"),
    (TenantSpec("x", cache_group=""), "cache_group"),
    (TenantSpec("x", home_region="r" * 51), "home_region"),
    (TenantSpec("x", regions=("eu", "\x00")), "regions"),
])
def test_invalid_tenant_specs_are_refused(store, spec, message):
    with pytest.raises(TenancyError, match=message) as caught:
        store.create_tenant(spec)
    assert caught.value.param == message
    assert store.list_tenants() == []


def test_limits_are_stored_up_to_the_largest_sql_integer_and_no_further(store):
    acme = _acme(store, requests_per_minute=2**31 - 1, max_concurrent=2**31 - 1)
    assert store.tenant(acme.id).spec.requests_per_minute == 2**31 - 1
    with pytest.raises(TenancyError, match="requests_per_minute: must be between 1 and 2147483647"):
        store.upsert_tenant(TenantSpec("acme", requests_per_minute=2**31))
    assert store.tenant(acme.id).spec.requests_per_minute == 2**31 - 1


def test_an_older_database_gets_cache_group_and_its_not_null_salt_column_is_still_written(database_url):
    """Databases made before `cache_group` have `salt_prefix_cache BOOLEAN NOT NULL` and no cache_group."""
    old = open_database(database_url)
    with old.begin() as conn:
        conn.execute(sa.text("ALTER TABLE tenants DROP COLUMN cache_group"))
    old.dispose()
    engine = open_database(database_url)   # adds the new column
    try:
        store = TenantStore(engine)
        created = store.create_tenant(TenantSpec("acme", cache_group="team"))
        store.upsert_tenant(TenantSpec("beta"))
        assert store.tenant("acme").spec.cache_group == "team" and created.spec.cache_group == "team"
        with engine.connect() as conn:
            flags = conn.execute(sa.select(tenants.c.salt_prefix_cache)).scalars().all()
        assert flags == [True, True]
    finally:
        engine.dispose()


# -- keys ------------------------------------------------------------------------------------------
def test_created_key_verifies_to_its_tenant(store):
    acme = _acme(store)
    key, record = store.create_key("acme", name="ci")
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 8 + 40
    assert key[len(KEY_PREFIX):len(KEY_PREFIX) + 8] == record.prefix
    tenant, verified = store.verify(key)
    assert tenant == acme and verified == record
    assert verified.name == "ci" and not verified.is_admin and verified.revoked_at is None


def test_only_the_hash_is_stored(store, engine):
    _acme(store)
    key, record = store.create_key("acme")
    with engine.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.id == record.id)).one()
        cells = [str(value) for r in conn.execute(sa.select(api_keys)) for value in r]
    assert row.key_hash == hash_key(key) and row.key_hash != key
    secret = key[len(KEY_PREFIX) + 8:]
    assert not any(key in cell or secret in cell for cell in cells), "the key's text is stored in api_keys"


def test_wrong_unknown_and_malformed_keys_do_not_verify(store):
    _acme(store)
    key, _ = store.create_key("acme")
    wrong_secret = key[:-1] + ("A" if key[-1] != "A" else "B")
    unknown_prefix = KEY_PREFIX + ("zzzzzzzz" if key[6:14] != "zzzzzzzz" else "yyyyyyyy") + key[14:]
    for bad in (wrong_secret, unknown_prefix, "", "sk-ic-short", key + "x", "sk-xx-" + key[6:], key.upper()):
        assert store.verify(bad) is None, bad


@pytest.mark.parametrize("how", ["full_key_prefix", "bare_prefix", "id", "id_as_text"])
def test_revoked_key_no_longer_verifies(store, how):
    _acme(store)
    key, record = store.create_key("acme")
    other, _ = store.create_key("acme")
    target = {"full_key_prefix": KEY_PREFIX + record.prefix, "bare_prefix": record.prefix,
              "id": record.id, "id_as_text": str(record.id)}[how]
    revoked = store.revoke_key(target)
    assert revoked.id == record.id and revoked.revoked_at is not None
    assert store.verify(key) is None
    assert store.verify(other) is not None, "revoking one key must leave the tenant's others valid"
    assert store.revoke_key(record.id).revoked_at == revoked.revoked_at  # a second revoke is a no-op


def test_revoking_an_unknown_key_fails(store):
    with pytest.raises(TenancyError, match="no API key"):
        store.revoke_key("sk-ic-nokeyhere")
    with pytest.raises(TenancyError, match="no API key"):
        store.revoke_key(12345)
    for beyond in (2**31, 10**30, "9" * 5000, "sk-ic-\x00\x00\x00\x00\x00\x00\x00\x00", "²³"):
        with pytest.raises(NotFound):   # ids no SQL INTEGER holds, prefixes no row has: not an overflow
            store.revoke_key(beyond)


def test_names_no_row_can_have_are_not_found(store):
    _acme(store)
    for name in ("x" * 100_000, "acme\x00", 2**40):
        assert store.find_tenant(name) is None
        with pytest.raises(NotFound) as caught:
            store.tenant(name)
        assert len(str(caught.value)) < 100   # the message does not echo a huge name


def test_revoke_by_an_all_digit_bare_prefix(store, engine):
    """Prefixes are drawn from [a-z0-9], so about 1 key in 29,000 has an all-digit prefix."""
    _acme(store)
    _, record = store.create_key("acme")
    with engine.begin() as conn:  # the prefix `secrets` could have drawn
        conn.execute(api_keys.update().where(api_keys.c.id == record.id).values(prefix="12345678"))
    try:
        revoked = store.revoke_key("12345678")
    except TenancyError as exc:
        pytest.fail(f"BUG: revoke_key('12345678') reads an all-digit prefix as a key id: {exc}")
    assert revoked.id == record.id


def test_expired_key_does_not_verify(store):
    _acme(store)
    expires = dt.datetime(2026, 6, 1, 0, 0, 0)
    key, record = store.create_key("acme", expires_at=expires)
    assert record.expires_at == expires
    assert store.verify(key, now=expires - dt.timedelta(seconds=1)) is not None
    assert store.verify(key, now=expires) is None
    assert store.verify(key, now=expires + dt.timedelta(days=1)) is None
    assert store.verify(key) is None  # the real now is after 2026-06-01 too


def test_key_expiring_in_the_future_verifies_now(store):
    _acme(store)
    key, _ = store.create_key("acme", expires_at=utcnow() + dt.timedelta(days=30))
    assert store.verify(key) is not None


def test_list_keys_by_tenant_and_admin_flag(store):
    acme, beta = _acme(store), store.create_tenant(TenantSpec("beta"))
    _, a1 = store.create_key("acme", name="a1")
    _, b1 = store.create_key(beta.id, name="b1", is_admin=True)
    _, a2 = store.create_key(acme.id, name="a2")
    assert [k.id for k in store.list_keys()] == [a1.id, b1.id, a2.id]
    assert [k.name for k in store.list_keys("acme")] == ["a1", "a2"]
    assert [k.name for k in store.list_keys(beta.id)] == ["b1"]
    assert store.list_keys("beta")[0].is_admin and not any(k.is_admin for k in store.list_keys("acme"))
    assert b1.describe()["admin"] is True and b1.describe()["prefix"] == KEY_PREFIX + b1.prefix
    with pytest.raises(TenancyError):
        store.list_keys("nobody")


def test_key_for_an_unknown_tenant_is_refused(store):
    with pytest.raises(NotFound, match="no tenant"):
        store.create_key("nobody")


@pytest.mark.parametrize("name", ["", "k" * 101, "tab\there", "nul\x00"])
def test_key_names_are_1_to_100_printable_characters(store, name):
    _acme(store)
    with pytest.raises(TenancyError, match="name") as caught:
        store.create_key("acme", name=name)
    assert caught.value.param == "name" and store.list_keys() == []
    assert store.create_key("acme", name="k" * 100)[1].name == "k" * 100


def test_key_expiry_is_within_a_hundred_years():
    now = dt.datetime(2026, 1, 1)
    assert key_expiry(None, now) is None
    assert key_expiry(1.5, now) == dt.datetime(2026, 1, 2, 12)
    assert key_expiry(36500, now) == now + dt.timedelta(days=36500)
    for days in (0, -1, 36500.5, 1e308, float("nan"), float("inf")):
        with pytest.raises(TenancyError, match="expires_in_days") as caught:
            key_expiry(days, now)
        assert caught.value.param == "expires_in_days"
