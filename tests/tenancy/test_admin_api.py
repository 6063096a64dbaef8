"""The admin API in process (the gateway's real app on real SQL): bad input is a 4xx naming its field.

The app is the gateway's own (gateway/app.py build_app), over a Tenancy on SQLite and PostgreSQL; its one
model is external, so no worker runs. Every case below answered 500, or was stored wrongly, before the
admin bodies were typed.
"""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from fastapi.testclient import TestClient

from infercloud.config import ModelSpec, ServerConfig, TenancySpec, TenantSpec
from infercloud.fleet.replicas import ReplicaSet
from infercloud.fleet.traffic import Traffic
from infercloud.gateway.accounting import Tenancy
from infercloud.gateway.admin_bodies import TenantBody
from infercloud.gateway.app import Gateway, build_app
from infercloud.gateway.load_book import LoadBook
from infercloud.gateway.planner import RoutePlanner

SQL_INT_MAX = 2**31 - 1


@pytest.fixture
def api(engine):
    """A TestClient with an admin key of tenant `ops`; `api.tenant_key` is a plain key of tenant `acme`."""
    config = ServerConfig(models=(ModelSpec("m", replicas=0, external=("http://127.0.0.1:9",)),),
                          tenancy=TenancySpec())
    fleet = ReplicaSet()
    gateway = Gateway(config, fleet, Traffic(lambda: 0.0), LoadBook(fleet),
                      RoutePlanner(config.models, 256, random.Random(0), 4096, 1.5))
    gateway.tenancy = Tenancy(config.tenancy, config.models, engine)
    store = gateway.tenancy.store
    store.upsert_tenant(TenantSpec("ops"))
    store.upsert_tenant(TenantSpec("acme"))
    admin_key, _ = store.create_key("ops", is_admin=True)
    with TestClient(build_app(gateway), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {admin_key}"}) as client:
        client.tenant_key = store.create_key("acme")[0]
        yield client


def refused(response, status: int, param: str | None) -> dict:
    """The response is OpenAI's error shape with this status and param; returns the error."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    assert len(error["message"]) < 500, "an error must not echo a huge input"
    return error


def mismatches(cases: list[tuple], send) -> list[tuple]:
    """Each case is (what to send, status, param); the cases whose answer differs, with the answer."""
    wrong = []
    for what, status, param in cases:
        response = send(what)
        error = response.json().get("error") if response.status_code >= 400 else None
        if response.status_code != status or error is None or error.get("param") != param or \
                len(error.get("message", "")) >= 500:
            wrong.append((str(what)[:80], response.status_code, response.text[:200]))
    return wrong


def tenant_names(api) -> list[str]:
    return [t["name"] for t in api.get("/admin/tenants").json()["data"]]


def post_tenant(api):
    return lambda body: (api.post("/admin/tenants", content=body) if isinstance(body, bytes)
                         else api.post("/admin/tenants", json=body))


# -- POST /admin/tenants ----------------------------------------------------------------------------

def test_wrong_types_in_a_tenant_are_400s_naming_the_field(api):
    """Strict: no coercion of "lots" to an int or True to 1; a string is not a list of names."""
    cases = [({"name": 12345}, 400, "name"),
             ({"tier": "batch"}, 400, "name"),
             ({"name": "t", "tier": 3}, 400, "tier"),
             ({"name": "t", "requests_per_minute": "lots"}, 400, "requests_per_minute"),
             ({"name": "t", "requests_per_minute": 1.5}, 400, "requests_per_minute"),
             ({"name": "t", "max_tokens_per_request": True}, 400, "max_tokens_per_request"),
             ({"name": "t", "budget_usd": "5"}, 400, "budget_usd"),
             ({"name": "t", "models": "m"}, 400, "models"),
             ({"name": "t", "models": [1]}, 400, "models"),
             ({"name": "t", "regions": "eu"}, 400, "regions"),
             ({"name": "t", "cache_group": 5}, 400, "cache_group"),
             ({"name": "t", "rpm": 5}, 400, "rpm")]
    assert mismatches(cases, post_tenant(api)) == []
    assert tenant_names(api) == ["ops", "acme"]


def test_values_out_of_range_in_a_tenant_are_400s_naming_the_field(api):
    """Limits go into SQL INTEGER columns; budgets are finite; names are short and plain."""
    cases = [({"name": "x" * 100_000}, 400, "name"),
             ({"name": ""}, 400, "name"),
             ({"name": "a/b"}, 400, "name"),
             ({"name": "t", "tier": "gold"}, 400, "tier"),
             ({"name": "t", "requests_per_minute": 0}, 400, "requests_per_minute"),
             ({"name": "t", "tokens_per_minute": SQL_INT_MAX + 1}, 400, "tokens_per_minute"),
             ({"name": "t", "max_concurrent": 2**70}, 400, "max_concurrent"),
             ({"name": "t", "max_concurrent": -1}, 400, "max_concurrent"),
             ({"name": "t", "budget_usd": -0.5}, 400, "budget_usd"),
             (b'{"name": "t", "budget_usd": 1e999}', 400, "budget_usd"),
             (b'{"name": "t", "budget_usd": -1e999}', 400, "budget_usd"),
             ({"name": "t", "budget_period": "week"}, 400, "budget_period"),
             ({"name": "t", "regions": []}, 400, "regions"),
             ({"name": "t", "home_region": "eu\u0000"}, 400, "home_region"),
             ({"name": "t", "home_region": "r" * 51}, 400, "home_region"),
             ({"name": "t", "cache_group": "team a"}, 400, "cache_group"),
             ({"name": "t", "models": ["m\u0000"]}, 400, "models"),
             ({"name": "t", "models": ["nope"]}, 400, "models"),
             ({"name": "acme"}, 400, "name")]   # exists
    assert mismatches(cases, post_tenant(api)) == []
    assert tenant_names(api) == ["ops", "acme"]


def test_a_home_region_outside_the_tenants_regions_is_a_400_as_in_the_config(api):
    """TenantSpec.check holds the rule, so the admin API refuses what the config file refuses."""
    error = refused(api.post("/admin/tenants", json={"name": "t", "regions": ["a"], "home_region": "b"}), 400,
                    "home_region")
    assert "is not one of its regions" in error["message"]
    assert tenant_names(api) == ["ops", "acme"]


def test_a_nan_budget_is_refused_not_stored_as_no_budget(api):
    response = api.post("/admin/tenants", content=b'{"name": "t", "budget_usd": NaN}')
    assert response.status_code == 400, response.text
    assert tenant_names(api) == ["ops", "acme"]


def test_salt_prefix_cache_is_refused_and_names_cache_group(api):
    error = refused(api.post("/admin/tenants", json={"name": "t", "salt_prefix_cache": True}), 400,
                    "salt_prefix_cache")
    assert "always isolated" in error["message"] and "cache_group" in error["message"]


def test_a_tenant_at_every_bound_is_made(api):
    body = {"name": "t" * 100, "requests_per_minute": SQL_INT_MAX, "tokens_per_minute": 1, "max_concurrent": 1,
            "max_tokens_per_request": SQL_INT_MAX, "budget_usd": 0, "models": ["m"], "cache_group": "g" * 100,
            "regions": ["r" * 50], "home_region": "r" * 50}
    response = api.post("/admin/tenants", json=body)
    assert response.status_code == 201, response.text
    made = api.get(f"/admin/tenants/{'t' * 100}").json()
    assert {k: made[k] for k in body} == {**body, "budget_usd": 0.0}


def test_the_tenant_body_has_every_field_of_a_tenant_spec():
    assert list(TenantBody.model_fields) == [f.name for f in dataclasses.fields(TenantSpec)]


# -- POST /admin/keys -------------------------------------------------------------------------------

def test_bad_key_fields_are_400s_naming_the_field(api):
    cases = [({"tenant": "acme", "expires_in_days": 1e308}, 400, "expires_in_days"),
             ({"tenant": "acme", "expires_in_days": 36501}, 400, "expires_in_days"),
             ({"tenant": "acme", "expires_in_days": 0}, 400, "expires_in_days"),
             ({"tenant": "acme", "expires_in_days": -3}, 400, "expires_in_days"),
             ({"tenant": "acme", "expires_in_days": "30"}, 400, "expires_in_days"),
             ({"tenant": "acme", "name": "k" * 100_000}, 400, "name"),
             ({"tenant": "acme", "name": "k" * 101}, 400, "name"),
             ({"tenant": "acme", "name": ""}, 400, "name"),
             ({"tenant": "acme", "name": "nul\u0000"}, 400, "name"),
             ({"tenant": "acme", "name": 7}, 400, "name"),
             ({"tenant": "acme", "admin": 1}, 400, "admin"),
             ({"tenant": "acme", "admin": "yes"}, 400, "admin"),
             ({"tenant": 5}, 400, "tenant"),
             ({"name": "k"}, 400, "tenant"),
             ({"tenant": "acme", "scopes": ["all"]}, 400, "scopes"),
             ({"tenant": "nobody"}, 404, "tenant"),
             ({"tenant": "x" * 100_000}, 404, "tenant")]
    assert mismatches(cases, lambda body: api.post("/admin/keys", json=body)) == []
    assert len(api.get("/admin/keys", params={"tenant": "acme"}).json()["data"]) == 1   # the fixture's


def test_a_key_at_every_bound_is_made(api):
    response = api.post("/admin/keys", json={"tenant": "acme", "name": "k" * 100, "admin": False,
                                             "expires_in_days": 36500})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "k" * 100 and response.json()["expires_at"].startswith("21")
    refused(api.post("/admin/keys", json={"tenant": "acme", "expires_in_days": 36500.5}), 400, "expires_in_days")


# -- GET and revoke ---------------------------------------------------------------------------------

def test_bad_times_are_400s_naming_since_or_until(api):
    cases = [("/admin/usage?since=garbage", 400, "since"),
             ("/admin/usage?until=garbage", 400, "until"),
             ("/admin/usage?since=99999999999d", 400, "since"),
             ("/admin/usage?until=99999999999h", 400, "until"),
             ("/admin/usage?by=week", 400, "by")]
    assert mismatches(cases, api.get) == []
    own = api.get("/v1/usage?since=99999999999d", headers={"Authorization": f"Bearer {api.tenant_key}"})
    refused(own, 400, "since")


def test_unknown_tenants_are_404s(api):
    cases = [("/admin/usage?tenant=nobody", 404, "tenant"),
             ("/admin/keys?tenant=nobody", 404, "tenant"),
             ("/admin/keys?tenant=", 404, "tenant"),
             ("/admin/tenants/nobody", 404, "name"),
             ("/admin/tenants/acme%00", 404, "name")]
    assert mismatches(cases, api.get) == []
    status, body = get_raw(api, "/admin/tenants/" + "x" * 100_000)
    assert status == 404 and body["error"]["param"] == "name" and len(body["error"]["message"]) < 500, body


def test_revoking_an_unknown_key_is_a_404(api):
    cases = [(prefix, 404, "prefix") for prefix in
             ("sk-ic-zzzzzzzz", "zzzzzzzz", "12345", "1" * 30, "9" * 5000, "sk-ic-%00%00")]
    assert mismatches(cases, lambda prefix: api.post(f"/admin/keys/{prefix}/revoke")) == []


def get_raw(client: TestClient, path: str) -> tuple[int, dict]:
    """GET `path` straight into the app's ASGI interface, on the client's event loop (httpx, under
    TestClient, refuses URLs over 64 KiB; a direct call has no such limit)."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"authorization", client.headers["authorization"].encode())],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    client.portal.call(client.app, scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)
