"""Prefix-cache salts on real SQL: secret, stable per database, shared only within a cache group."""

from __future__ import annotations

import hashlib
import threading

import sqlalchemy as sa

from infercloud.config import TenancySpec, TenantSpec
from infercloud.gateway.accounting import Tenancy
from infercloud.store.database import open_database
from infercloud.store.schema import deployment_secrets
from infercloud.tenancy.admission import Principal
from infercloud.tenancy.cache_salt import CACHE_SALT_SECRET, SECRET_BYTES, CacheSalts, deployment_secret
from infercloud.tenancy.store import TenantStore


def tenancy(engine: sa.Engine) -> Tenancy:
    return Tenancy(TenancySpec(), (), engine)


def principal(store: TenantStore, name: str, **spec) -> Principal:
    return Principal(store.upsert_tenant(TenantSpec(name, **spec)), None)  # the key is not read


def old_salt(tenant_id: int) -> str:
    """What a salted tenant's salt used to be: anyone who knew (or guessed) its id could compute it."""
    return hashlib.sha256(f"tenant:{tenant_id}".encode()).hexdigest()[:32]


def test_a_tenants_salt_is_not_derivable_from_its_id(engine):
    acme = principal(TenantStore(engine), "acme")
    salt = tenancy(engine).cache_salt(acme, None)
    assert salt is not None and len(salt) == 32
    assert salt != old_salt(acme.tenant.id)
    assert salt != hashlib.sha256(b"group:acme").hexdigest()[:32]


def test_every_tenant_is_salted_by_default_and_apart(engine):
    store = TenantStore(engine)
    a, b = principal(store, "a"), principal(store, "b")
    salts = tenancy(engine)
    assert salts.cache_salt(a, None) != salts.cache_salt(b, None)


def test_the_salt_is_stable_across_gateways_on_one_database(engine):
    acme = principal(TenantStore(engine), "acme")
    first, second = tenancy(engine), tenancy(engine)
    assert first.cache_salt(acme, None) == second.cache_salt(acme, None)
    assert first.cache_salt(acme, "s1") == second.cache_salt(acme, "s1")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(deployment_secrets)).all()
    assert [(r.name, len(bytes.fromhex(r.value))) for r in rows] == [(CACHE_SALT_SECRET, SECRET_BYTES)]


def test_two_deployments_salt_the_same_tenant_differently(tmp_path):
    salts = []
    for name in ("one", "two"):
        engine = open_database(f"sqlite:///{tmp_path}/{name}.db")
        acme = principal(TenantStore(engine), "acme")   # id 1 in both
        salts.append(tenancy(engine).cache_salt(acme, None))
        engine.dispose()
    assert salts[0] != salts[1]


def test_tenants_of_one_cache_group_share_a_salt_and_no_one_else_does(engine):
    store = TenantStore(engine)
    a1, a2 = principal(store, "a1", cache_group="acme"), principal(store, "a2", cache_group="acme")
    other_group, alone = principal(store, "b1", cache_group="beta"), principal(store, "c")
    salts = tenancy(engine)
    assert salts.cache_salt(a1, None) == salts.cache_salt(a2, None)
    assert len({salts.cache_salt(p, None) for p in (a1, other_group, alone)}) == 3
    assert salts.cache_salt(alone, None) != salts.cache_salt(principal(store, "acme"), None)  # a name is not a group


def test_a_clients_salt_stays_within_its_tenant(engine):
    store = TenantStore(engine)
    a, b = principal(store, "a"), principal(store, "b")
    salts = tenancy(engine)
    assert salts.cache_salt(a, "shared") != salts.cache_salt(b, "shared")
    assert salts.cache_salt(a, "shared") not in (salts.cache_salt(a, None), salts.cache_salt(a, "other"))
    assert salts.cache_salt(b, old_salt(a.tenant.id)) != salts.cache_salt(a, None)
    assert salts.cache_salt(b, salts.cache_salt(a, None)) != salts.cache_salt(a, None)  # even knowing it
    assert salts.cache_salt(a, "") == salts.cache_salt(a, None) and salts.cache_salt(a, 7) == salts.cache_salt(a, None)


def test_first_starts_racing_end_with_one_secret(database_url):
    """Several gateways opening a new database at once: each inserts if missing, all read the winner's."""
    engines = [open_database(database_url) for _ in range(6)]
    barrier, found = threading.Barrier(len(engines)), []

    def start(engine: sa.Engine) -> None:
        barrier.wait()
        found.append(deployment_secret(engine, "race"))

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(found) == len(engines) and len(set(found)) == 1 and len(found[0]) == SECRET_BYTES
        assert deployment_secret(engines[0], "race") == found[0]
        assert deployment_secret(engines[0], "another") != found[0]
    finally:
        for engine in engines:
            engine.dispose()


def test_a_secret_already_stored_is_used_not_replaced(engine):
    with engine.begin() as conn:
        conn.execute(deployment_secrets.insert().values(name=CACHE_SALT_SECRET, value="ab" * 32))
    assert CacheSalts.of_database(engine).secret == bytes([0xAB]) * 32
    assert "ab" * 4 not in repr(CacheSalts.of_database(engine))   # the secret stays out of logs
