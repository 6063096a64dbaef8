"""The audit log through the gateway's real app on real SQL (SQLite, and PostgreSQL when configured).

Admin changes (tenants, keys, pipelines) are audited with the admin key, the object before and after and no
secret; /admin/audit filters every row for admin keys; /v1/audit shows a tenant its own policy decisions and
never another tenant's; bad parameters are 400s naming them. The one model is external: no worker runs.
"""

# ruff: noqa: F811  (pytest fixtures as parameters shadow the imported `engine` fixture)
from __future__ import annotations

import asyncio
import datetime as dt
import json
import random

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from infercloud.config import ModelSpec, ServerConfig, TenancySpec, TenantSpec
from infercloud.fleet.replicas import ReplicaSet
from infercloud.fleet.traffic import Traffic
from infercloud.gateway.accounting import Tenancy
from infercloud.gateway.app import Gateway, build_app
from infercloud.gateway.load_book import LoadBook
from infercloud.gateway.planner import RoutePlanner
from infercloud.policy.audit import AuditLog, AuditRow
from infercloud.store.schema import audit
from infercloud.tenancy.store import hash_key
from tests.tenancy.db_fixture import database_url, engine  # noqa: F401

T0 = dt.datetime(2026, 12, 5, 12, 0)


def _gateway(engine, tenancy: bool = True) -> Gateway:
    config = ServerConfig(models=(ModelSpec("m", replicas=0, external=("http://127.0.0.1:9",)),),
                          tenancy=TenancySpec() if tenancy else None)
    fleet = ReplicaSet()
    gateway = Gateway(config, fleet, Traffic(lambda: 0.0), LoadBook(fleet),
                      RoutePlanner(config.models, 256, random.Random(0), 4096, 1.5))
    if tenancy:
        gateway.tenancy = Tenancy(config.tenancy, config.models, engine)
    return gateway


@pytest.fixture
def api(engine):
    """A TestClient with an admin key of tenant `ops` (`api.admin_id`); plain keys of tenants `acme` and
    `beta` (`api.keys`), and their ids (`api.tenant_ids`)."""
    gateway = _gateway(engine)
    store = gateway.tenancy.store
    ids = {name: store.upsert_tenant(TenantSpec(name)).id for name in ("ops", "acme", "beta")}
    admin_key, admin_record = store.create_key("ops", is_admin=True)
    with TestClient(build_app(gateway), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {admin_key}"}) as client:
        client.admin_id, client.tenant_ids = admin_record.id, ids
        client.keys = {name: store.create_key(name)[0] for name in ("acme", "beta")}
        yield client


def as_tenant(api, name: str) -> dict:
    return {"Authorization": f"Bearer {api.keys[name]}"}


def _policy_rows(engine, ids: dict[str, int]) -> None:
    """Two tenants' decisions, a second apart: acme's at T0+0, +2 and +4 s, beta's at +1 and +3 s."""
    rows = []
    for n, (tenant, rule) in enumerate([("acme", "pii"), ("beta", "pii"), ("acme", "payments"), ("beta", "payments"),
                                        ("acme", "pii")]):
        rows.append(AuditRow("policy", "redact" if rule == "pii" else "strip", f"{tenant} decision {n}",
                             tenant_id=ids[tenant], key_id=None, request_id=f"req-{n}", rule=rule, mode="enforce",
                             at=T0 + dt.timedelta(seconds=n)))
    AuditLog(engine).write(rows)


def refused(response, status: int, param: str | None, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error


# -- admin changes ----------------------------------------------------------------------------------

def test_admin_changes_are_audited_with_before_and_after_and_no_secret(api, engine):
    made = api.post("/admin/tenants", json={"name": "gamma", "tier": "batch"})
    assert made.status_code == 201, made.text
    gamma = made.json()
    key = api.post("/admin/keys", json={"tenant": "gamma", "name": "ci"})
    assert key.status_code == 201, key.text
    secret, prefix = key.json()["key"], key.json()["prefix"]
    revoked = api.post(f"/admin/keys/{prefix}/revoke")
    assert revoked.status_code == 200, revoked.text

    listing = api.get("/admin/audit", params={"kind": "admin"})
    assert listing.status_code == 200, listing.text
    rows = listing.json()["data"]
    assert [r["action"] for r in rows] == ["revoke_key", "create_key", "create_tenant"]   # newest first
    assert {(r["kind"], r["key_id"], r["tenant_id"], r["tenant"]) for r in rows} == \
        {("admin", api.admin_id, gamma["id"], "gamma")}
    revoke, create_key, create_tenant = rows
    assert create_tenant["before"] is None and create_tenant["after"] == gamma
    assert create_tenant["what"] == "create tenant gamma (tier batch)"
    assert create_key["before"] is None and create_key["after"]["prefix"] == prefix
    assert create_key["after"]["name"] == "ci" and prefix in create_key["what"]
    assert revoke["before"]["revoked_at"] is None and revoke["after"] == revoked.json()
    assert revoke["after"]["revoked_at"] is not None
    for row in rows:
        assert row["at"].endswith("Z") and dt.datetime.fromisoformat(row["at"].removesuffix("Z"))
    # no secret, neither in what the API shows nor in the table
    with engine.connect() as conn:
        stored = json.dumps([dict(r._mapping) for r in conn.execute(sa.select(audit))], default=str)
    for text in (listing.text, stored):
        assert secret not in text and secret[len(prefix):] not in text and hash_key(secret) not in text
        assert '"key"' not in text and "key_hash" not in text


def test_refused_changes_are_not_audited(api):
    assert api.post("/admin/tenants", json={"name": "acme"}).status_code == 400   # exists
    assert api.post("/admin/keys/sk-ic-zzzzzzzz/revoke").status_code == 404
    assert api.post("/admin/tenants", json={"name": "x"}, headers=as_tenant(api, "acme")).status_code == 403
    assert api.get("/admin/audit").json()["data"] == []


def test_pipelines_made_and_deleted_are_audited(api):
    body = {"name": "made", "slo_s": 30, "stages": [{"kind": "generate", "model": "m"}]}
    made = api.post("/admin/pipelines", json=body)
    assert made.status_code == 200, made.text
    assert api.delete("/admin/pipelines/made").status_code == 200
    assert api.delete("/admin/pipelines/made").status_code == 404   # nothing changed: no row
    deleted, created = api.get("/admin/audit", params={"kind": "admin"}).json()["data"]
    assert (created["action"], created["key_id"], created["before"], created["after"]) == \
        ("create_pipeline", api.admin_id, None, made.json())
    assert (deleted["action"], deleted["before"], deleted["after"]) == ("delete_pipeline", made.json(), None)
    assert deleted["what"] == "delete pipeline made" and deleted["tenant_id"] is None


# -- /admin/audit -----------------------------------------------------------------------------------

def test_admin_audit_filters(api, engine):
    _policy_rows(engine, api.tenant_ids)
    api.post("/admin/keys", json={"tenant": "acme"})   # an admin row about acme

    def whats(**params) -> list[str]:
        response = api.get("/admin/audit", params=params)
        assert response.status_code == 200, response.text
        return [r["what"] for r in response.json()["data"]]

    assert whats(kind="policy") == [f"{t} decision {n}" for n, t in
                                    [(4, "acme"), (3, "beta"), (2, "acme"), (1, "beta"), (0, "acme")]]
    assert whats(tenant="beta") == ["beta decision 3", "beta decision 1"]
    assert len(whats(tenant="acme")) == 4 and whats(tenant="acme", kind="admin")[0].startswith("create key")
    assert whats(rule="payments") == ["beta decision 3", "acme decision 2"]
    assert whats(request_id="req-1") == ["beta decision 1"]
    assert whats(kind="policy", since="2026-12-05T12:00:02", until="2026-12-05T12:00:04Z") == \
        ["beta decision 3", "acme decision 2"]
    assert whats(kind="policy", limit="2") == ["acme decision 4", "beta decision 3"]
    assert whats(tenant="ops") == [] and whats(rule="nope") == []
    row = api.get("/admin/audit", params={"request_id": "req-2"}).json()["data"][0]
    assert row == {"id": row["id"], "object": "audit.entry", "at": "2026-12-05T12:00:02Z", "kind": "policy",
                   "tenant": "acme", "tenant_id": api.tenant_ids["acme"], "key_id": None, "request_id": "req-2",
                   "rule": "payments", "mode": "enforce", "action": "strip", "what": "acme decision 2",
                   "before": None, "after": None}


def test_bad_admin_audit_parameters_are_400s_naming_them(api):
    cases = [("kind=other", "kind"), ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
             ("limit=-1", "limit"), ("limit=" + "9" * 5000, "limit"), ("since=garbage", "since"), ("until=99999999999d", "until"),
             ("rule=" + "r" * 101, "rule"), ("request_id=a%00b", "request_id"), ("request_id=" + "q" * 81,
                                                                                 "request_id"),
             ("order=asc", "order")]
    for query, param in cases:
        refused(api.get(f"/admin/audit?{query}"), 400, param)
    refused(api.get("/admin/audit?tenant=nobody"), 404, "tenant")
    refused(api.get("/admin/audit?tenant=a%00b"), 404, "tenant")
    assert api.get("/admin/audit?limit=1000").status_code == 200
    assert api.get("/admin/audit?limit=1&rule=" + "r" * 100).status_code == 200


def test_admin_audit_needs_an_admin_key(api):
    refused(api.get("/admin/audit", headers=as_tenant(api, "acme")), 403, None, "admin_key_required")
    assert api.get("/admin/audit", headers={"Authorization": ""}).status_code == 401
    assert api.get("/v1/audit", headers={"Authorization": ""}).status_code == 401
    assert api.get("/admin/audit", headers={"Authorization": "Bearer sk-ic-nope"}).status_code == 401


def test_without_tenancy_the_audit_routes_are_404s(engine):
    with TestClient(build_app(_gateway(engine, tenancy=False)), raise_server_exceptions=False) as client:
        for path in ("/admin/audit", "/v1/audit"):
            refused(client.get(path), 404, None, "tenancy_disabled")


# -- /v1/audit --------------------------------------------------------------------------------------

def test_a_tenant_sees_its_own_policy_decisions_only(api, engine):
    _policy_rows(engine, api.tenant_ids)
    api.post("/admin/keys", json={"tenant": "acme"})   # an admin row about acme: not acme's to see

    def whats(name: str, **params) -> list[str]:
        response = api.get("/v1/audit", params=params, headers=as_tenant(api, name))
        assert response.status_code == 200, response.text
        rows = response.json()["data"]
        assert {(r["kind"], r["tenant"]) for r in rows} <= {("policy", name)}
        return [r["what"] for r in rows]

    assert whats("acme") == ["acme decision 4", "acme decision 2", "acme decision 0"]
    assert whats("beta") == ["beta decision 3", "beta decision 1"]
    assert whats("acme", tenant="acme", kind="policy", rule="pii") == ["acme decision 4", "acme decision 0"]
    assert whats("acme", request_id="req-1") == []     # beta's request: as if it did not exist
    assert whats("beta", request_id="req-1") == ["beta decision 1"]
    assert whats("acme", since="2026-12-05T12:00:01", limit="1") == ["acme decision 4"]
    refused(api.get("/v1/audit?tenant=beta", headers=as_tenant(api, "acme")), 403, "tenant", "not_your_tenant")
    refused(api.get("/v1/audit?kind=admin", headers=as_tenant(api, "acme")), 403, "kind")
    refused(api.get("/v1/audit?limit=0", headers=as_tenant(api, "acme")), 400, "limit")


def test_reads_see_rows_recorded_just_before(api):
    """The routes flush the gateway's buffer first: a decision recorded now is read now."""
    tenancy = api.app.app.state.gateway.tenancy
    tenancy.audit.record([AuditRow("policy", "refuse", "just now", tenant_id=api.tenant_ids["beta"], rule="r")])
    assert tenancy.audit.num_buffered == 1
    assert [r["what"] for r in api.get("/v1/audit", headers=as_tenant(api, "beta")).json()["data"]] == ["just now"]
    assert tenancy.audit.num_buffered == 0


def test_the_routes_are_in_the_openapi_schema(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert "get" in paths["/admin/audit"] and "get" in paths["/v1/audit"]


def test_tenancy_starts_and_closes_its_audit_writer(engine):
    tenancy = _gateway(engine).tenancy

    async def main():
        await tenancy.start()
        tenancy.audit.record([AuditRow("admin", "create_tenant", "at close", tenant_id=None)])
        await tenancy.close()

    asyncio.run(main())
    assert [r.what for r in AuditLog(engine).query()] == ["at close"]
