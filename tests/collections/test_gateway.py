"""Collections through a gateway with tenancy: each tenant's collections are its own (another's is exactly as
unknown as a missing one, and names do not clash), a request without a key is a 401, and the chunks' and
queries' embeddings are metered to the caller under its request id.

One gateway, one all-MiniLM-L6-v2 replica, tenants, ledger and collections in a SQLite file (or the
PostgreSQL server named by INFERCLOUD_TEST_POSTGRES_URL).
"""

# ruff: noqa: F811  (pytest fixtures as parameters shadow the imported `database` fixture)
from __future__ import annotations

import uuid

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.test_tenancy import admin, cli, database, new_tenant  # noqa: F401 (database: the fixture)
from tests.worker.conftest import start_server

MINILM = "minilm"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, database):
    url, _ = database
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "tenants": [{"name": "ops", "tier": "interactive"}]},
        "models": [{"name": MINILM, "path": "all-minilm-l6-v2", "kind": "embedding", "replicas": 1,
                    "price": {"input_per_mtok": 1.0}}],
    }
    server = start_server(tmp_path_factory.mktemp("collections-gw"), config, startup_timeout_s=300)
    server.admin_key = cli("keys", "create", "--tenant", "ops", "--admin", "--database", url)
    yield server
    assert server.stop() == 0, server.log()


def call(gw, key: str | None, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{gw.url}/v1{path}", headers={**headers, **kwargs.pop("headers", {})},
                         timeout=120, **kwargs)


def test_a_tenant_sees_only_its_own_collections(gw):
    a, b = new_tenant(gw), new_tenant(gw)
    assert call(gw, a, "POST", "/collections", json={"name": "docs"}).json()["embedding_model"] == MINILM
    call(gw, a, "POST", "/collections/docs/documents", json={"documents": [
        {"id": "secret", "text": "The launch code of tenant A is swordfish."}]}).raise_for_status()

    answers = {}
    for name in ("docs", "missing"):
        replies = [call(gw, b, "GET", f"/collections/{name}"), call(gw, b, "DELETE", f"/collections/{name}"),
                   call(gw, b, "POST", f"/collections/{name}/search", json={"query": "launch code"}),
                   call(gw, b, "GET", f"/collections/{name}/documents"),
                   call(gw, b, "GET", f"/collections/{name}/documents/secret"),
                   call(gw, b, "POST", f"/collections/{name}/documents", json={"documents": [{"text": "x"}]})]
        answers[name] = [(r.status_code, r.json()["error"]["code"], r.json()["error"]["message"].replace(name, "N"))
                         for r in replies]
    assert answers["docs"] == answers["missing"] and {a[0] for a in answers["docs"]} == {404}
    assert call(gw, b, "GET", "/collections").json()["data"] == []

    assert call(gw, b, "POST", "/collections", json={"name": "docs"}).status_code == 200   # no clash with A's
    call(gw, b, "POST", "/collections/docs/documents", json={"documents": [
        {"id": "mine", "text": "Tenant B keeps its recipes here: bread needs flour."}]}).raise_for_status()
    hits = call(gw, b, "POST", "/collections/docs/search", json={"query": "launch code"}).json()["data"]
    assert [h["document_id"] for h in hits] == ["mine"]
    mine = call(gw, a, "POST", "/collections/docs/search", json={"query": "launch code"}).json()["data"]
    assert [h["document_id"] for h in mine] == ["secret"]

    for method, path in (("GET", "/collections"), ("GET", "/collections/docs"),
                         ("POST", "/collections/docs/search")):
        denied = call(gw, None, method, path, json={"query": "q"} if method == "POST" else None)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "missing_api_key"


def test_embeddings_are_metered_to_the_caller(gw, database):
    key = new_tenant(gw)
    call(gw, key, "POST", "/collections", json={"name": "metered"}).raise_for_status()
    rid = f"coll-{uuid.uuid4().hex[:8]}"
    added = call(gw, key, "POST", "/collections/metered/documents", headers={"X-Request-Id": rid},
                 json={"documents": [{"text": f"Document {i} is about topic {i}."} for i in range(3)]}).json()
    found = call(gw, key, "POST", "/collections/metered/search", headers={"X-Request-Id": rid + "-q"},
                 json={"query": "topic two"}).json()
    admin(gw, "GET", "/admin/usage")   # flushes the gateway's queued ledger rows
    with database[1].connect() as conn:
        rows = conn.execute(sa.text("SELECT request_id, endpoint, model, prompt_tokens FROM usage "
                                    "WHERE request_id IN (:a, :b) ORDER BY request_id"),
                            {"a": rid, "b": rid + "-q"}).all()
    assert [tuple(r) for r in rows] == [(rid, "/v1/embeddings", MINILM, added["usage"]["prompt_tokens"]),
                                        (rid + "-q", "/v1/embeddings", MINILM, found["usage"]["prompt_tokens"])]
