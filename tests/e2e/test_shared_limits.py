"""Two gateways over one tenancy database: rate limits shared through Redis, or each gateway's own.

Each gateway runs one replica of a tiny random model. With `tenancy.redis_url` the two admit a tenant's
requests per minute and concurrency once in all; without it each admits them in full, so the tenant
gets twice its limits (the trade-off the README states). Redis is $INFERCLOUD_TEST_REDIS_URL's server,
its database 1, emptied first (tenant ids restart with every test database).
"""

from __future__ import annotations

import urllib.parse

import httpx
import pytest
import redis

from tests.e2e.conftest import wait_for
from tests.e2e.test_tenancy import admin, cli, database, new_tenant  # noqa: F401
from tests.tenancy.redis_fixture import shared_redis_url
from tests.worker.conftest import start_server

ENGINE = {"num_kv_blocks": 160, "max_num_seqs": 8}


def _empty_redis_db() -> str:
    """The test Redis's database 1, emptied: a URL for the gateways."""
    url = urllib.parse.urlsplit(shared_redis_url())._replace(path="/1").geturl()
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="module", params=["shared", "per-process"])
def gateways(request, tmp_path_factory, database, random_model_dirs):  # noqa: F811 (the imported fixture)
    tenancy = {"database": database[0], "auth_cache_s": 0.5, "tenants": [{"name": "ops", "tier": "interactive"}]}
    if request.param == "shared":
        tenancy["redis_url"] = _empty_redis_db()
    config = {"cluster": {"threads_per_worker": 1}, "controller": {"probe_interval_s": 0.25},
              "tenancy": tenancy,
              "models": [{"name": "rand", "path": str(random_model_dirs[0]), "replicas": 1, "engine": ENGINE}]}
    started = []
    try:
        for _ in range(2):  # one after the other: each creates the declared tenants at start
            started.append(start_server(tmp_path_factory.mktemp("shared-limits"), config, startup_timeout_s=300))
        admin_key = cli("keys", "create", "--tenant", "ops", "--admin", "--database", database[0])
        for gw in started:
            gw.admin_key = admin_key
        yield request.param == "shared", started
    finally:
        for gw in started:
            assert gw.stop() == 0, gw.log()


def complete(gw, key: str, **body) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": "rand", "prompt": "Hello", "max_tokens": 1, **body})


def test_requests_per_minute_hold_across_gateways_only_when_shared(gateways):
    is_shared, (a, b) = gateways
    key = new_tenant(a, requests_per_minute=5)   # 12 s a request: none refills during the test
    responses = [complete(gw, key) for gw in (a, b) * 7]
    codes = [r.status_code for r in responses]
    assert codes.count(200) == (5 if is_shared else 10), codes
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
    assert all(r.headers["x-ratelimit-remaining-requests"] == "0" and int(r.headers["Retry-After"]) >= 1
               for r in refused)


def test_concurrency_cap_holds_across_gateways_only_when_shared(gateways):
    is_shared, (a, b) = gateways
    key = new_tenant(a, max_concurrent=2)
    long = {"max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as client:
        streams = [client.stream("POST", f"{gw.url}/v1/completions", headers={"Authorization": f"Bearer {key}"},
                                 json={"model": "rand", "prompt": "Once", **long}) for gw in (a, b)]
        responses = [stream.__enter__() for stream in streams]
        try:
            assert [r.status_code for r in responses] == [200, 200]
            lines = [response.iter_lines() for response in responses]   # kept: a dropped one closes its stream
            assert all(next(line).startswith("data: ") for line in lines)   # both are generating
            third = complete(b, key)
            if is_shared:
                assert third.status_code == 429 and third.json()["error"]["code"] == "concurrency_limit_exceeded"
            else:
                assert third.status_code == 200, third.text
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
    wait_for(lambda: complete(a, key).status_code == 200, "the streams' slots to come back", timeout_s=30)
    assert [in_flight(gw, key) for gw in (a, b)] == [0, 0]


def in_flight(gw, key: str) -> int:
    """The requests in flight of the tenant that owns `key`, as this gateway's admin API tells."""
    tenant_id = next(k["tenant_id"] for k in admin(gw, "GET", "/admin/keys").json()["data"]
                     if key.startswith(k["prefix"]))
    name = next(t["name"] for t in admin(gw, "GET", "/admin/tenants").json()["data"] if t["id"] == tenant_id)
    return admin(gw, "GET", f"/admin/tenants/{name}").json()["in_flight"]
