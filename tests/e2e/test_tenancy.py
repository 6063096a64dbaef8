"""Tenancy end to end: keys, isolation, rate limits, budgets, priority tiers and the ledger, on a real gateway.

One gateway runs 2 SmolLM2 replicas (`smol`), 1 SmolLM2 replica with 2 sequence slots (`smol-one`, for
the priority test) and MiniLM. Tenants are made through the admin API with an admin key made by the CLI.
The ledger is SQLite, or the PostgreSQL server named by INFERCLOUD_TEST_POSTGRES_URL (as in CI).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa

from infercloud.store.schema import metadata
from tests.e2e.conftest import replicas, wait_for
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
ENGINE = {"kv_cache_memory_gb": 0.1}
PRICE = {"input_per_mtok": 100.0, "cached_input_per_mtok": 10.0, "output_per_mtok": 400.0, "device_per_hour": 3.6}
CHAT = {"messages": [{"role": "user", "content": "Count from one to fifty in words."}]}


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    url = os.environ.get("INFERCLOUD_TEST_POSTGRES_URL") or f"sqlite:///{tmp_path_factory.mktemp('db')}/ledger.db"
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    yield url, engine
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, database, smollm2_dir):
    url, _ = database
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "tenants": [{"name": "ops", "tier": "interactive"}]},
        "models": [
            {"name": "smol", "path": SMOL, "replicas": 2, "routing": "least_load", "engine": ENGINE, "price": PRICE},
            {"name": "smol-one", "path": SMOL, "replicas": 1, "price": PRICE,
             "engine": {**ENGINE, "max_num_seqs": 2}},
            {"name": "minilm", "path": "all-minilm-l6-v2", "kind": "embedding", "price": {"input_per_mtok": 1.0}},
        ],
    }
    server = start_server(tmp_path_factory.mktemp("tenancy"), config, startup_timeout_s=300)
    server.admin_key = cli("keys", "create", "--tenant", "ops", "--admin", "--database", url)
    yield server
    assert server.stop() == 0, server.log()


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "infercloud", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def admin(gw, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {gw.admin_key}"}, timeout=30,
                         **kwargs)


def new_tenant(gw, name: str | None = None, **limits) -> str:
    """A tenant with these limits and one key; returns the key."""
    name = name or f"t-{uuid.uuid4().hex[:8]}"
    assert admin(gw, "POST", "/admin/tenants", json={"name": name, **limits}).status_code == 201
    created = admin(gw, "POST", "/admin/keys", json={"tenant": name})
    assert created.status_code == 201
    return created.json()["key"]


def chat(gw, key: str | None, model: str = "smol", **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{gw.url}/v1/chat/completions", headers=headers, timeout=120,
                      json={"model": model, **CHAT, "max_tokens": 4, **body})


def ledger_rows(gw, database, request_id: str) -> list:
    admin(gw, "GET", "/admin/usage")  # flushes the gateway's queued rows
    with database[1].connect() as conn:
        return conn.execute(sa.text("SELECT * FROM usage WHERE request_id = :r ORDER BY id"), {"r": request_id}).all()


# -- keys and isolation -------------------------------------------------------------------------------

def test_keys_gate_every_route_and_tenants_stay_apart(gw):
    a = new_tenant(gw, models=["smol"])
    b = new_tenant(gw, models=["minilm"])
    assert chat(gw, None).json()["error"]["code"] == "missing_api_key"
    assert chat(gw, None).status_code == 401
    assert chat(gw, a[:-4] + "XXXX").status_code == 401
    assert chat(gw, a).status_code == 200
    denied = chat(gw, b)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    models = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {b}"}).json()["data"]
    assert [m["id"] for m in models] == ["minilm"]
    other = httpx.get(f"{gw.url}/v1/usage", params={"tenant": "ops"}, headers={"Authorization": f"Bearer {b}"})
    assert other.status_code == 403 and other.json()["error"]["code"] == "not_your_tenant"
    assert httpx.get(f"{gw.url}/admin/usage", headers={"Authorization": f"Bearer {a}"}).status_code == 403
    own = httpx.get(f"{gw.url}/v1/usage", headers={"Authorization": f"Bearer {a}"}).json()["data"]
    assert [row["model"] for row in own] == ["smol"]  # A's usage only


def test_revoked_key_fails_on_its_next_request(gw):
    key = new_tenant(gw)
    assert chat(gw, key).status_code == 200
    prefix = key[:14]
    assert admin(gw, "POST", f"/admin/keys/{prefix}/revoke").status_code == 200
    assert chat(gw, key).status_code == 401  # the admin API drops the cached key at once


def test_key_revoked_by_the_cli_fails_once_the_auth_cache_expires(gw, database):
    key = new_tenant(gw)
    assert chat(gw, key).status_code == 200
    cli("keys", "revoke", key[:14], "--database", database[0])
    wait_for(lambda: chat(gw, key).status_code == 401, "the CLI's revocation to reach the gateway", 10)


# -- limits -------------------------------------------------------------------------------------------

def test_requests_per_minute_gives_429_with_openai_headers(gw):
    key = new_tenant(gw, requests_per_minute=3)
    remaining = [chat(gw, key).headers["x-ratelimit-remaining-requests"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    limited = chat(gw, key)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-limit-requests"] == "3"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tokens_per_minute_and_max_tokens_cap(gw):
    key = new_tenant(gw, tokens_per_minute=100, max_tokens_per_request=16)
    too_big = chat(gw, key, max_tokens=17)
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "max_tokens_exceeds_limit"
    first = chat(gw, key, max_tokens=16)  # ~25 prompt + 16 reserved; unused tokens come back at the end
    assert first.status_code == 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 100
    statuses = [chat(gw, key, max_tokens=16).status_code for _ in range(4)]
    assert 429 in statuses


def test_concurrency_cap_under_concurrent_load(gw):
    key = new_tenant(gw, max_concurrent=2)

    async def main():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(
                f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                json={"model": "smol", **CHAT, "max_tokens": 48, "ignore_eos": True}) for _ in range(6)))

    responses = asyncio.run(main())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"concurrency_limit_exceeded"}
    assert chat(gw, key).status_code == 200  # slots come back


def test_a_refused_stream_gives_its_slot_back(gw):
    key = new_tenant(gw, max_concurrent=1)
    for _ in range(3):  # a worker's 400 to a stream, before any byte: the slot must not leak
        bad = chat(gw, key, stream=True, temperature=-1)
        assert bad.status_code == 400, bad.text
    assert chat(gw, key).status_code == 200


def test_budget_is_not_overspent_by_more_than_one_request_under_concurrency(gw):
    # a request's max cost: ~35 prompt tokens at $100/M + 8 output at $400/M = ~$0.0067
    key = new_tenant(gw, budget_usd=0.01, budget_period="day")

    async def main():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(
                f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                json={"model": "smol", **CHAT, "max_tokens": 8}) for _ in range(10)))

    responses = asyncio.run(main())
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert ok and refused
    assert {(r.status_code, r.json()["error"]["code"]) for r in refused} == {(429, "insufficient_quota")}
    prompt = ok[0].json()["usage"]["prompt_tokens"]
    max_cost = (prompt * 100 + 8 * 400) / 1e6
    for _ in range(6):  # one at a time until refused: then spent has reached the budget
        later = chat(gw, key, max_tokens=8)
        if later.status_code != 200:
            break
    assert later.status_code == 429 and later.json()["error"]["code"] == "insufficient_quota"
    tenant = httpx.get(f"{gw.url}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    spent = sum(row["cost_usd"] for row in tenant)
    assert 0.01 <= spent <= 0.01 + max_cost, (spent, max_cost)


def test_a_tenants_prompts_share_cached_blocks_only_with_itself_and_its_cache_group(gw):
    """cached_tokens would tell B, to the token, that A sent the same prompt: so by default no tenant
    shares, not even one that sends the salt A had when salts were derived from the tenant id."""
    a_name, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    a, b = new_tenant(gw, name=a_name), new_tenant(gw)   # both with the default config
    a_id = admin(gw, "GET", f"/admin/tenants/{a_name}").json()["id"]
    system = {"role": "system", "content": f"Answer as a ship's captain from 1820, {uuid.uuid4().hex}. " * 12}
    body = {"messages": [system, {"role": "user", "content": "Where are we?"}], "max_tokens": 1}

    def cached(key: str, **extra) -> int:
        response = chat(gw, key, model="smol-one", **body, **extra)   # one replica: one prefix cache
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    assert cached(a) == 0
    assert cached(b) == 0                                   # A's blocks are invisible to B...
    derivable = hashlib.sha256(f"tenant:{a_id}".encode()).hexdigest()[:32]
    assert cached(b, cache_salt=derivable) == 0             # ...even through A's once-derivable salt
    assert cached(a) > 100                                  # while A's blocks serve A's repeats
    g1, g2 = new_tenant(gw, cache_group=group), new_tenant(gw, cache_group=group)
    assert cached(g1) == 0                                  # a cache group is a namespace of its own...
    assert cached(g2) > 100                                 # ...shared by its tenants


# -- priority -------------------------------------------------------------------------------------------

def test_interactive_requests_get_lower_ttft_than_batch_on_the_same_replica(gw):
    batch_key = new_tenant(gw, tier="batch")
    urgent_key = new_tenant(gw, tier="interactive")

    async def ttft(client: httpx.AsyncClient, key: str, delay_s: float) -> float:
        await asyncio.sleep(delay_s)
        start = time.perf_counter()
        body = {"model": "smol-one", **CHAT, "max_tokens": 40, "ignore_eos": True, "stream": True}
        async with client.stream("POST", f"{gw.url}/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status_code == 200
            first = None
            async for line in response.aiter_lines():
                if first is None and '"content":"' in line and '"content":""' not in line:
                    first = time.perf_counter() - start
        return first

    async def main():
        async with httpx.AsyncClient(timeout=300) as client:
            batch = [ttft(client, batch_key, 0) for _ in range(6)]
            urgent = [ttft(client, urgent_key, 0.5 + 0.2 * i) for i in range(3)]
            return await asyncio.gather(*batch), await asyncio.gather(*urgent)

    batch, urgent = asyncio.run(main())
    # 2 slots: 4 of the batch requests queue; interactive ones take a batch request's slot at once
    assert max(urgent) < sorted(batch)[2], (batch, urgent)


# -- the ledger -----------------------------------------------------------------------------------------

async def _stream(client, key, request_id, max_tokens=24, stop_after: int | None = None) -> dict:
    """A streamed chat; returns the usage the client was told (None if it left after `stop_after` chunks)."""
    body = {"model": "smol", **CHAT, "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    usage, chunks = None, 0
    async with client.stream("POST", f"{gw_url(client)}/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {key}", "X-Request-Id": request_id}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunks += 1
                if '"usage"' in line:
                    usage = json.loads(line[6:])["usage"]
            if stop_after is not None and chunks >= stop_after:
                return {"left_after_chunks": chunks}
    return usage


def gw_url(client: httpx.AsyncClient) -> str:
    return str(client.base_url).rstrip("/")


def test_ledger_sums_equal_client_usage_over_streams_aborts_failures_and_a_killed_worker(gw, database):
    key = new_tenant(gw)
    ids = {kind: [f"{kind}-{uuid.uuid4().hex[:10]}" for _ in range(n)]
           for kind, n in (("stream", 8), ("abort", 2), ("plain", 3), ("bad", 1), ("plain_abort", 1))}

    async def routed() -> None:
        """Until a request is on a replica: admitted and metered (one cancelled before that uses nothing)."""
        for _ in range(600):
            if sum(r["outstanding_requests"] or 0 for r in await asyncio.to_thread(replicas, gw, "smol")):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the plain request never reached a replica")

    async def main():
        async with httpx.AsyncClient(base_url=gw.url, timeout=300) as client:
            headers = {"Authorization": f"Bearer {key}"}
            plain_abort = asyncio.create_task(client.post(
                "/v1/chat/completions", json={"model": "smol", **CHAT, "max_tokens": 200, "ignore_eos": True},
                headers={**headers, "X-Request-Id": ids["plain_abort"][0]}))
            await routed()
            streams = [asyncio.create_task(_stream(client, key, rid, max_tokens=64)) for rid in ids["stream"]]
            aborts = [asyncio.create_task(_stream(client, key, rid, stop_after=3)) for rid in ids["abort"]]
            plain = [client.post("/v1/chat/completions", json={"model": "smol", **CHAT, "max_tokens": 6},
                                 headers={**headers, "X-Request-Id": rid}) for rid in ids["plain"]]
            bad = client.post("/v1/chat/completions", json={"model": "smol", **CHAT, "temperature": -1},
                              headers={**headers, "X-Request-Id": ids["bad"][0]})
            await asyncio.sleep(1.0)
            busiest = max(replicas(gw, "smol"), key=lambda r: r["outstanding_requests"])
            os.kill(busiest["pid"], signal.SIGKILL)
            plain_abort.cancel()
            plain_responses = await asyncio.gather(*plain)
            bad_response = await bad
            return (await asyncio.gather(*streams), await asyncio.gather(*aborts), plain_responses, bad_response)

    streams, aborts, plain, bad = asyncio.run(main())
    told = dict(zip(ids["stream"], streams))
    told.update({rid: r.json()["usage"] for rid, r in zip(ids["plain"], plain)})
    for rid, usage in told.items():
        assert usage is not None, rid
        rows = ledger_rows(gw, database, rid)
        assert {r.outcome for r in rows} <= {"completed", "migrated"} and rows[-1].outcome == "completed", rows
        assert sum(r.prompt_tokens for r in rows) == usage["prompt_tokens"], (rid, rows, usage)
        assert sum(r.completion_tokens for r in rows) == usage["completion_tokens"], (rid, rows, usage)
        assert sum(r.cached_tokens for r in rows) == usage["prompt_tokens_details"]["cached_tokens"]
        assert sum(r.device_seconds for r in rows) == pytest.approx(usage["device_seconds"], abs=1e-5)
        assert sum(r.cost_usd for r in rows) == pytest.approx(
            ((usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]) * 100
             + usage["prompt_tokens_details"]["cached_tokens"] * 10 + usage["completion_tokens"] * 400) / 1e6)
    migrated = [rid for rid in ids["stream"] if any(r.outcome == "migrated" for r in ledger_rows(gw, database, rid))]
    assert migrated, "the killed worker served none of the streams"
    for rid in ids["abort"]:
        rows = ledger_rows(gw, database, rid)
        assert rows[-1].outcome == "aborted" and sum(r.completion_tokens for r in rows) >= 1, rows
    assert bad.status_code == 400
    assert [(r.outcome, r.status, r.completion_tokens) for r in ledger_rows(gw, database, ids["bad"][0])] == \
        [("failed", 400, 0)]
    wait_for(lambda: any(r.outcome == "aborted" for r in ledger_rows(gw, database, ids["plain_abort"][0])),
             "the aborted plain request's row", 30)
    assert [r.outcome for r in ledger_rows(gw, database, ids["plain_abort"][0])] == ["aborted"]
    wait_for(lambda: len([r for r in replicas(gw, "smol") if r["state"] == "ready"]) == 2,
             "the killed worker to be replaced")


def test_another_tenants_request_id_does_not_bill_its_usage(gw, database):
    """Tenant B reuses tenant A's X-Request-Id and leaves before its answer: B is billed for what B's own
    request used, looked up on the worker under the gateway's random usage key, not for A's request
    (both on the one replica of smol-one, whose worker saw the id twice)."""
    rid = f"shared-{uuid.uuid4().hex[:10]}"
    a, b = new_tenant(gw), new_tenant(gw)
    done = httpx.post(f"{gw.url}/v1/chat/completions", timeout=120,
                      json={"model": "smol-one", **CHAT, "max_tokens": 1},
                      headers={"Authorization": f"Bearer {a}", "X-Request-Id": rid})
    assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 1
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gw.url}/v1/chat/completions", timeout=httpx.Timeout(3.0, connect=5),
                   json={"model": "smol-one", **CHAT, "max_tokens": 400, "ignore_eos": True},
                   headers={"Authorization": f"Bearer {b}", "X-Request-Id": rid})
    wait_for(lambda: len(ledger_rows(gw, database, rid)) == 2, "both rows of the shared request id", 30)
    first, second = ledger_rows(gw, database, rid)
    assert (first.outcome, first.completion_tokens) == ("completed", 1)
    assert second.outcome == "aborted" and second.completion_tokens > 1, second   # its own, not A's 1 token


def test_metrics_answer_an_admin_key_or_the_internal_token_and_nobody_else(gw):
    tenant_key = new_tenant(gw)
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {tenant_key}"}, 403),
                            ({"Authorization": "Bearer sk-ic-not-a-key"}, 401),
                            ({"Authorization": f"Bearer {gw.admin_key}"}, 200), (gw.auth, 200)):
        r = httpx.get(f"{gw.url}/metrics", headers=headers, timeout=30)
        assert r.status_code == status, (headers, r.text)
    for headers in ({"Authorization": f"Bearer {gw.admin_key}"}, {"Authorization": f"Bearer {tenant_key}"}):
        assert httpx.get(f"{gw.url}/internal/state", headers=headers, timeout=30).status_code == 401
