"""The Responses API through a gateway with tenancy: each tenant's stored responses are its own, a
continuation is admitted, metered and routed like a chat completion and lands on the replica holding the
conversation's KV blocks (prefix-aware routing), and streams come through the gateway's relay.

One gateway, 2 SmolLM2 replicas routed prefix_aware, tenants and ledger (and stored responses) in a
SQLite file, or the PostgreSQL server named by INFERCLOUD_TEST_POSTGRES_URL.
"""

# ruff: noqa: F811  (pytest fixtures as parameters shadow the imported `database` fixture)
from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
import sqlalchemy as sa

from tests.e2e.conftest import replicas, wait_for
from tests.e2e.test_tenancy import admin, cli, database, new_tenant  # noqa: F401 (database: the fixture)
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
BLOCK = 16


@pytest.fixture(scope="module")
def gw(tmp_path_factory, database, smollm2_dir):
    url, _ = database
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "tenants": [{"name": "ops", "tier": "interactive"}]},
        "models": [{"name": SMOL, "replicas": 2, "routing": "prefix_aware", "engine": {"kv_cache_memory_gb": 0.1}}],
    }
    server = start_server(tmp_path_factory.mktemp("responses-gw"), config, startup_timeout_s=300)
    server.admin_key = cli("keys", "create", "--tenant", "ops", "--admin", "--database", url)
    yield server
    assert server.stop() == 0, server.log()


def client(gw, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key or "none", max_retries=0)


def test_another_tenants_response_is_as_unknown_as_a_missing_one(gw):
    a, b = client(gw, new_tenant(gw)), client(gw, new_tenant(gw))
    mine = a.responses.create(model=SMOL, input="What is the capital of France?", max_output_tokens=8)
    assert a.responses.retrieve(mine.id).id == mine.id
    missing = "resp_" + "0" * 48
    for response_id in (mine.id, missing):
        answers = []
        for call in (lambda: b.responses.retrieve(response_id), lambda: b.responses.delete(response_id),
                     lambda: b.responses.input_items.list(response_id),
                     lambda: b.responses.create(model=SMOL, input="Go on.", max_output_tokens=4,
                                                previous_response_id=response_id)):
            with pytest.raises(openai.NotFoundError) as caught:
                call()
            body = dict(caught.value.body)
            answers.append((body["type"], body["code"], body["param"], body["message"].replace(response_id, "ID")))
        if response_id == mine.id:
            seen = answers
        else:
            assert answers == seen   # the same answers, word for word: nothing tells the two apart
    assert a.responses.retrieve(mine.id).output_text == mine.output_text   # B's DELETE did nothing
    with pytest.raises(openai.AuthenticationError):
        client(gw, None).responses.retrieve(mine.id)
    a.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(mine.id)


def test_a_continuation_is_metered_and_lands_where_its_blocks_are(gw, database):
    key = new_tenant(gw)
    tenant = client(gw, key)
    rid = f"resp-test-{uuid.uuid4().hex[:8]}"
    first = tenant.responses.with_raw_response.create(model=SMOL, input="What is the capital of France?",
                                                      max_output_tokens=16, temperature=0)
    first_replica, first = first.headers["x-infercloud-replica"], first.parse()
    second = tenant.responses.with_raw_response.create(model=SMOL, input="And of Germany?", max_output_tokens=16,
                                                       temperature=0, previous_response_id=first.id,
                                                       extra_headers={"X-Request-Id": rid})
    assert second.headers["x-infercloud-replica"] == first_replica   # prefix-aware routing found its blocks
    second = second.parse()
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached > 0 and cached >= first.usage.input_tokens // BLOCK * BLOCK - BLOCK

    admin(gw, "GET", "/admin/usage")   # flushes the gateway's queued ledger rows
    with database[1].connect() as conn:
        rows = conn.execute(sa.text("SELECT endpoint, prompt_tokens, cached_tokens, completion_tokens FROM usage "
                                    "WHERE request_id = :r"), {"r": rid}).all()
        owners = conn.execute(sa.text("SELECT owner, root_id FROM responses WHERE id = :i"), {"i": second.id}).all()
    assert [tuple(r) for r in rows] == [("/v1/chat/completions", second.usage.input_tokens, cached,
                                         second.usage.output_tokens)]
    [(owner, root)] = owners
    assert owner.startswith("tenant:") and root == first.id


def test_a_stream_through_the_gateway_is_stored_as_sent(gw):
    key = new_tenant(gw)
    answer = httpx.post(f"{gw.url}/v1/responses", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                        json={"model": SMOL, "input": "Tell me a short joke.", "max_output_tokens": 16, "stream": True})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] in ("response.completed", "response.incomplete") and final["usage"]["input_tokens"]
    stored = httpx.get(f"{gw.url}/v1/responses/{final['id']}", headers={"Authorization": f"Bearer {key}"})
    assert stored.json() == final
    streamed = list(client(gw, key).responses.create(model=SMOL, input="Go on.", previous_response_id=final["id"],
                                                     max_output_tokens=8, stream=True))
    assert streamed[-1].response.usage.input_tokens_details.cached_tokens > 0


def test_a_tenants_limits_apply_to_its_responses(gw):
    key = new_tenant(gw, max_tokens_per_request=8)
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw, key).responses.create(model=SMOL, input="Hi", max_output_tokens=9)
    assert caught.value.body["code"] == "max_tokens_exceeds_limit"
    assert caught.value.body["param"] == "max_output_tokens"     # the Responses field the client sent
    assert client(gw, key).responses.create(model=SMOL, input="Hi", max_output_tokens=8).usage.output_tokens <= 8


def test_a_client_that_leaves_a_stream_frees_the_replica_and_is_billed(gw, database):
    key, rid = new_tenant(gw), f"resp-leave-{uuid.uuid4().hex[:8]}"
    long = {"type": "object", "properties": {"n": {"type": "array", "minItems": 400, "items": {
        "type": "integer", "minimum": 0, "maximum": 9}}}, "required": ["n"]}   # no end before ~800 tokens
    body = {"model": SMOL, "input": "Count from one to a thousand.", "max_output_tokens": 1500, "stream": True,
            "text": {"format": {"type": "json_schema", "name": "count", "schema": long}}}
    with httpx.stream("POST", f"{gw.url}/v1/responses", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}", "X-Request-Id": rid}) as answer:
        seen = [line for line, _ in zip(answer.iter_lines(), range(30))]
    assert any("response.output_text.delta" in line for line in seen)
    wait_for(lambda: all(r["outstanding_requests"] == 0 for r in replicas(gw, SMOL)), "the replicas to be idle", 30)
    wait_for(lambda: _ledger(gw, database, rid), "the stream's usage row", 30)
    [(outcome, completion)] = _ledger(gw, database, rid)
    assert outcome == "aborted" and 0 < completion < 1500


def _ledger(gw, database, request_id: str) -> list[tuple]:
    admin(gw, "GET", "/admin/usage")
    with database[1].connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT outcome, completion_tokens FROM usage WHERE "
                                                       "request_id = :r"), {"r": request_id})]
