"""Pipelines, collections and response caches through a gateway with tenants: real worker processes, the real
SmolLM2 and MiniLM, the ledger in SQL (SQLite, or the PostgreSQL of INFERCLOUD_TEST_POSTGRES_URL).

- exact cache: a repeated deterministic request is a hit with the same text; any changed field misses;
- semantic cache: a paraphrase hits, the same question after another history misses, another tenant misses;
  a streamed hit is a valid SSE stream with usage; hits are billed as cache hits with no device time;
- a pipeline's ledger rows, under its one request id, sum stage by stage to the usage the client was told;
- a tenant sees only its own collections: another's pipeline retrieval finds nothing of the first's;
- a pipeline's answer lists the policy decisions the gateway made about its stages' calls.
"""

# ruff: noqa: F811  (pytest fixtures as parameters shadow the imported `database` fixture)
from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

from infercloud.bench.workloads.rag import rag_corpus, rag_questions
from tests.e2e.conftest import wait_for
from tests.e2e.test_tenancy import cli, database, ledger_rows, new_tenant  # noqa: F401 (database: the fixture)
from tests.worker.conftest import start_server

SMOL, MINILM = "smollm2-135m-instruct", "all-minilm-l6-v2"
CORPUS = rag_corpus(40, seed=5)
QUESTIONS = rag_questions(CORPUS, 10, seed=5)


@pytest.fixture(scope="module")
def gw(tmp_path_factory, database, smollm2_dir):
    url, _ = database
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "ledger_flush_s": 0.02,
                    "tenants": [{"name": "ops", "tier": "interactive"}]},
        "models": [{"name": SMOL, "engine": {"kv_cache_memory_gb": 0.1},
                    "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cache_hit_per_mtok": 0.1}},
                   {"name": MINILM, "kind": "embedding"}],
        "cache": {"exact": {"enabled": True}, "semantic": {"models": [{"name": SMOL}], "threshold": 0.9}},
        "pipelines": [{"name": "rag", "slo_s": 60, "stages": [
            {"kind": "embed"}, {"kind": "retrieve", "collection": "atlas", "top_k": 3},
            {"kind": "generate", "max_tokens": 8, "temperature": 0},
            {"kind": "check", "rule": "groundedness", "threshold": 0.3}]}],
    }
    server = start_server(tmp_path_factory.mktemp("pipelines-gw"), config, startup_timeout_s=300)
    server.admin_key = cli("keys", "create", "--tenant", "ops", "--admin", "--database", url)
    yield server
    assert server.stop() == 0, server.log()


def client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def ask(tenant: openai.OpenAI, messages: list[dict], **body):
    raw = tenant.chat.completions.with_raw_response.create(model=SMOL, messages=messages,
                                                           **{"max_tokens": 8, "temperature": 0, **body})
    return raw.headers["x-infercloud-cache"], raw.headers["x-request-id"], raw.parse()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_repeated_deterministic_request_is_an_exact_hit_and_any_change_misses(gw, database):
    tenant = client(gw, new_tenant(gw))
    first = ask(tenant, user("Name a colour of the sky."))
    second = ask(tenant, user("Name a colour of the sky."))
    assert first[0] == "miss" and second[0] == "hit"
    assert second[2].choices[0].message.content == first[2].choices[0].message.content
    assert second[2].id != first[2].id and second[2].usage.completion_tokens == first[2].usage.completion_tokens
    for changed in ({"max_tokens": 7}, {"seed": 3}, {"stop": ["."]}, {"top_p": 0.5}):
        assert ask(tenant, user("Name a colour of the sky."), **changed)[0] == "miss", changed
    assert ask(tenant, user("Name a colour of the sea."))[0] == "miss"
    assert ask(tenant, user("Name a colour of the sky."), extra_headers={"Cache-Control": "no-cache"})[0] == "miss"
    sampled = tenant.chat.completions.with_raw_response.create(model=SMOL, messages=user("Name a colour of the sky."),
                                                               max_tokens=8, temperature=1.0)
    assert sampled.headers["x-infercloud-cache"] == "miss"   # not deterministic: never served from the cache
    rows = ledger_rows(gw, database, second[1])
    assert [(r.outcome, r.device_seconds, r.prompt_tokens, r.completion_tokens) for r in rows] == \
        [("cache_hit", 0.0, second[2].usage.prompt_tokens, second[2].usage.completion_tokens)]
    tokens = second[2].usage.prompt_tokens + second[2].usage.completion_tokens
    assert rows[0].cost_usd == pytest.approx(tokens * 0.1 / 1e6)
    metrics = httpx.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {gw.admin_key}"}, timeout=10).text
    for result in ("hit", "miss", "bypass", "stored"):
        assert f'infercloud_gateway_cache_total{{model="{SMOL}",result="{result}"}}' in metrics, result


def test_a_paraphrase_is_a_semantic_hit_but_not_after_another_history_or_for_another_tenant(gw):
    key = new_tenant(gw)
    tenant, other = client(gw, key), client(gw, new_tenant(gw))
    question = QUESTIONS[0]
    assert ask(tenant, user(question.text))[0] == "miss"
    wait_for(lambda: ask(tenant, user(question.text))[0] == "hit", "the answer to be stored", 10)
    status, _, reply = ask(tenant, user(question.paraphrases[0]))
    assert status == "semantic-hit" and reply.choices[0].message.content
    history = [{"role": "user", "content": "Let us talk about ships."}, {"role": "assistant", "content": "Sure."}]
    assert ask(tenant, history + user(question.text))[0] == "miss"
    assert ask(other, user(question.paraphrases[0]))[0] == "miss"   # (it is stored in the other's namespace now)
    assert ask(client(gw, new_tenant(gw)), user(question.text))[0] == "miss"
    stream = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                        json={"model": SMOL, "messages": user(question.paraphrases[1]), "max_tokens": 8,
                              "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
    assert stream.headers["x-infercloud-cache"] == "semantic-hit"
    events = [line[6:] for line in stream.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    streamed = tenant.chat.completions.create(model=SMOL, messages=user(question.paraphrases[1]), max_tokens=8,
                                              temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens


def test_a_streamed_miss_fills_the_cache(gw):
    tenant = client(gw, new_tenant(gw))
    stream = tenant.chat.completions.create(model=SMOL, messages=user("Count to three."), max_tokens=8, temperature=0,
                                            stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    wait_for(lambda: ask(tenant, user("Count to three."))[0] == "hit", "the streamed answer to be stored", 10)
    assert ask(tenant, user("Count to three."))[2].choices[0].message.content == text


def test_pipeline_ledger_rows_sum_stage_by_stage_and_collections_are_per_tenant(gw, database):
    key_a, key_b = new_tenant(gw), new_tenant(gw)
    http_a = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key_a}"}, timeout=120)
    http_b = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key_b}"}, timeout=120)
    assert http_a.post("/v1/collections", json={"name": "atlas"}).status_code == 200
    docs = [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in CORPUS]
    assert http_a.post("/v1/collections/atlas/documents", json={"documents": docs}).status_code == 200
    question = QUESTIONS[1]
    raw = client(gw, key_a).chat.completions.with_raw_response.create(model="rag", messages=user(question.text))
    reply = raw.parse()
    assert question.document_id in [s["document_id"] for s in reply.infercloud["sources"]]
    told = reply.usage.model_dump()["stages"]
    rows = ledger_rows(gw, database, raw.headers["x-request-id"])
    booked: dict[str, dict] = {}
    for row in rows:
        stage = row.stage.removeprefix("rag/")
        totals = booked.setdefault(stage, {"model": row.model, "prompt_tokens": 0, "completion_tokens": 0})
        totals["prompt_tokens"] += row.prompt_tokens
        totals["completion_tokens"] += row.completion_tokens
    assert booked == told and set(told) == {"embed", "generate", "check"}
    assert all(r.outcome == "completed" for r in rows)
    # tenant B: no collection of A's, by name or through the pipeline
    assert http_b.get("/v1/collections/atlas").status_code == 404
    assert http_b.get("/v1/collections").json()["data"] == []
    answer = http_b.post("/v1/chat/completions", json={"model": "rag", "messages": user(question.text)})
    assert answer.status_code == 404 and "'retrieve'" in answer.json()["error"]["message"]
    assert httpx.post(f"{gw.url}/v1/pipelines/rag", json={"input": "x"}).status_code == 401


def test_a_pipeline_answer_lists_the_policy_decisions_about_its_stages(gw):
    name = f"t-{uuid.uuid4().hex[:8]}"
    key = new_tenant(gw, name)
    http = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert http.post("/v1/collections", json={"name": "atlas"}).status_code == 200
    docs = [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in CORPUS[:10]]
    assert http.post("/v1/collections/atlas/documents", json={"documents": docs}).status_code == 200
    rule = {"name": f"mail-watch-{name}", "kind": "guard", "tenants": [name], "direction": "input",
            "detect": ["email"], "mode": "log_only"}
    made = httpx.post(f"{gw.url}/admin/policies", json=rule, timeout=30,
                      headers={"Authorization": f"Bearer {gw.admin_key}"})
    assert made.status_code in (200, 201), made.text
    question = f"{QUESTIONS[2].text} Reply to ops@example.com."
    expected = {"stage": "generate", "rule": rule["name"], "mode": "log_only"}

    answer = http.post("/v1/chat/completions", json={"model": "rag", "messages": user(question)})
    assert answer.status_code == 200, answer.text
    report = answer.json()["infercloud"]
    assert report["pipeline"] == "rag" and report["policy"]
    assert all({k: d[k] for k in expected} == expected for d in report["policy"])
    (generate,) = [s for s in report["stages"] if s["name"] == "generate"]
    assert [d["rule"] for d in generate["policy"]] == [d["rule"] for d in report["policy"]]

    events = []
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": "rag", "messages": user(question), "stream": True}) as streamed:
        assert streamed.status_code == 200
        events = [json.loads(line[6:]) for line in streamed.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    # the stage's own policy chunk is folded into the pipeline's last chunk, which reports it
    assert [e for e in events[:-1] if "infercloud" in e] == []
    assert [d["rule"] for d in events[-1]["infercloud"]["policy"]] == [d["rule"] for d in report["policy"]]
