"""Continuous evaluation on a real gateway: worker processes with the real SmolLM2 (which also judges), the
scores in SQL (SQLite, or the PostgreSQL of INFERCLOUD_TEST_POSTGRES_URL).

`smol` has every answer scored (sample 1.0: refusal, length, json_schema and a judge); `smol-tenth` a tenth
of them. Scores are written off the request path, so the tests wait for them to arrive.
"""

# ruff: noqa: F811  (pytest fixtures as parameters shadow the imported `database` fixture)
from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest
import sqlalchemy as sa

from infercloud.store.schema import eval_scores
from tests.e2e.conftest import wait_for
from tests.e2e.test_tenancy import admin, cli, database  # noqa: F401 (database: the fixture)
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
JUDGE = {"kind": "judge", "model": "smol", "rubric": "A good answer is correct, relevant and brief.", "max_tokens": 4}
COLOUR = {"type": "json_schema", "json_schema": {"name": "colour", "schema": {
    "type": "object", "properties": {"colour": {"type": "string", "enum": ["blue", "green"]}}, "required": ["colour"]}}}
TENTH_REQUESTS = 300


@pytest.fixture(scope="module")
def gw(tmp_path_factory, database, smollm2_dir):
    url, _ = database
    engine = {"kv_cache_memory_gb": 0.1}
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "ledger_flush_s": 0.02,
                    "tenants": [{"name": "ops", "tier": "interactive"}]},
        "models": [{"name": "smol", "path": SMOL, "engine": engine},
                   {"name": "smol-tenth", "path": SMOL, "engine": engine}],
        "evaluations": [
            {"target": "smol", "sample": 1.0, "degraded_below": 0.99, "window": 3,
             "evaluators": [{"kind": "refusal"}, {"kind": "length", "max_chars": 10}, {"kind": "json_schema"}, JUDGE]},
            {"target": "smol-tenth", "sample": 0.1, "evaluators": [{"kind": "refusal"}]},
        ],
    }
    server = start_server(tmp_path_factory.mktemp("evaluation-gw"), config, startup_timeout_s=300)
    server.admin_key = cli("keys", "create", "--tenant", "ops", "--admin", "--database", url)
    yield server
    assert server.stop() == 0, server.log()


def chat(gw, model: str, **body) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {gw.admin_key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "What colour is the sky?"}],
                            "max_tokens": 12, "temperature": 0, **body}, timeout=120)


def streamed(gw, model: str) -> str:
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {gw.admin_key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "Name a fruit."}],
                            "max_tokens": 12, "temperature": 0, "stream": True}, timeout=120) as r:
        assert r.status_code == 200
        assert "data: [DONE]" in list(r.iter_lines())
        return r.headers["x-request-id"]


def scores(database, **where) -> list:
    with database[1].connect() as conn:
        query = sa.select(eval_scores)
        for column, value in where.items():
            query = query.where(eval_scores.c[column] == value)
        return conn.execute(query).all()


def test_with_a_full_sample_every_answer_has_its_scores_and_the_judge_runs_at_the_lowest_tier(gw, database):
    plain = [chat(gw, "smol").headers["x-request-id"] for _ in range(3)]
    streams = [streamed(gw, "smol") for _ in range(2)]
    structured = chat(gw, "smol", response_format=COLOUR)
    assert structured.status_code == 200
    ids = plain + streams + [structured.headers["x-request-id"]]
    expected = {rid: {"refusal", "length", "judge"} for rid in ids}
    expected[ids[-1]].add("json_schema")

    def scored() -> dict:
        found: dict[str, set] = {}
        for row in scores(database, target="smol"):
            found.setdefault(row.request_id, set()).add(row.evaluator)
        return {rid: found.get(rid, set()) for rid in ids}

    wait_for(lambda: scored() == expected, "every answer's scores", 120)
    judged = [r for r in scores(database, target="smol", evaluator="judge") if r.request_id in ids]
    assert len(judged) == len(ids) and all(0.0 <= r.value <= 1.0 for r in judged)
    assert all(r.detail.endswith("at tier batch") for r in judged), [r.detail for r in judged]
    # each judge score keeps what its call used (the operator's cost): the judge prompt holds the question and
    # answer, its reply is one constrained grade, and the worker timed it
    assert all(r.judge_prompt_tokens > 30 and r.judge_completion_tokens >= 1 and r.judge_device_seconds > 0
               for r in judged), [(r.judge_prompt_tokens, r.judge_completion_tokens, r.judge_device_seconds)
                                  for r in judged]
    assert all(r.judge_prompt_tokens is None for r in scores(database, target="smol", evaluator="refusal"))
    length = [r for r in scores(database, evaluator="length") if r.request_id in ids]
    assert all(not r.passed for r in length)   # 12 tokens are more than max_chars 10
    (schema,) = scores(database, evaluator="json_schema", request_id=ids[-1])
    assert schema.passed and schema.value == 1.0

    report = admin(gw, "GET", "/admin/evaluations", params={"by": "evaluator", "target": "smol"}).json()
    counts = {row["evaluator"]: row["count"] for row in report["data"]}
    assert counts["refusal"] >= len(ids) and counts["json_schema"] >= 1
    (judge_row,) = [row for row in report["data"] if row["evaluator"] == "judge"]
    assert judge_row["judge_tokens"] >= sum(r.judge_prompt_tokens + r.judge_completion_tokens for r in judged)
    assert judge_row["judge_device_seconds"] > 0
    # length's window of 3 is full and below 0.99; refusal's is all passes (the judge's depends on its grades)
    assert "length" in report["degraded"]["smol"] and "refusal" not in report["degraded"]["smol"]
    assert "smol-tenth" not in report["degraded"]
    health = httpx.get(f"{gw.url}/health", timeout=10).json()
    assert health["status"] == "degraded" and "length" in health["models"]["smol"]["degraded_evaluators"]
    metrics = httpx.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {gw.admin_key}"}, timeout=10).text
    assert 'infercloud_evaluation_scores_total{evaluator="length",result="failed",target="smol"}' in metrics
    assert 'infercloud_evaluation_degraded{target="smol"} 1.0' in metrics
    by_day = admin(gw, "GET", "/admin/evaluations", params={"by": "day"}).json()["data"]
    assert {row["evaluator"] for row in by_day} >= {"refusal", "length", "judge", "json_schema"}
    assert admin(gw, "GET", "/admin/evaluations", params={"by": "week"}).status_code == 400
    assert httpx.get(f"{gw.url}/admin/evaluations", timeout=10).status_code == 401


def test_with_a_tenth_sampled_about_a_tenth_of_the_answers_are_scored(gw, database):
    before = len(scores(database, target="smol-tenth"))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: chat(gw, "smol-tenth", max_tokens=1).status_code, range(TENTH_REQUESTS)))
    assert answers == [200] * TENTH_REQUESTS
    # binomial(300, 0.1): mean 30, standard deviation 5.2; 4.5 standard deviations either side
    count = lambda: len(scores(database, target="smol-tenth")) - before   # noqa: E731
    wait_for(lambda: count() >= 7, "the sampled answers' scores", 60)
    settled = count()
    wait_for(lambda: count() == settled, "no more scores", 5)
    assert 7 <= settled <= 53, settled


def test_a_sampled_answer_is_the_one_the_client_got(gw, database):
    answer = chat(gw, "smol", max_tokens=3)
    rid = answer.headers["x-request-id"]
    wait_for(lambda: len(scores(database, request_id=rid)) == 3, "its scores", 120)
    (length,) = scores(database, request_id=rid, evaluator="length")
    text = answer.json()["choices"][0]["message"]["content"]
    assert length.passed == (len(text) <= 10 and answer.json()["choices"][0]["finish_reason"] != "length")
    assert json.dumps(text) not in (length.detail or "")
