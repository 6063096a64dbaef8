"""Pipelines on the single-box server: a real process, the real SmolLM2 and MiniLM, a collection of 240
documents whose source for each question is known, and the official `openai` client calling a pipeline
as a model. Stages out of time are skipped or fail as configured; the answer carries sources, per-stage
times (a field and Server-Timing) and per-stage usage; streams are valid SSE with usage."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from infercloud.bench.workloads.rag import rag_corpus, rag_questions
from tests.worker.conftest import DEFAULT_MODELS, start_server

RAG = [{"kind": "embed"}, {"kind": "retrieve", "collection": "atlas", "top_k": 5},
       {"kind": "rerank", "method": "embedding", "top_k": 3},
       {"kind": "generate", "max_tokens": 12, "temperature": 0},
       {"kind": "check", "rule": "groundedness", "threshold": 0.3}]
PIPELINES = [
    {"name": "rag", "slo_s": 120, "stages": RAG},
    # the chat model scores each of 8 passages in 10 ms at most: it cannot, so the stage is skipped / fails
    {"name": "rag-skip", "slo_s": 120, "stages": [
        {"kind": "embed"}, {"kind": "retrieve", "collection": "atlas", "top_k": 8},
        {"kind": "rerank", "method": "llm", "top_k": 2, "budget_s": 0.01, "on_budget": "skip"},
        {"kind": "generate", "max_tokens": 4}]},
    {"name": "rag-fail", "slo_s": 120, "stages": [
        {"kind": "embed"}, {"kind": "retrieve", "collection": "atlas", "top_k": 8},
        {"kind": "rerank", "method": "llm", "top_k": 2, "budget_s": 0.01, "on_budget": "fail"},
        {"kind": "generate", "max_tokens": 4}]},
    {"name": "json-check", "stages": [{"kind": "generate", "max_tokens": 8, "temperature": 0},
                                      {"kind": "check", "rule": "json_schema", "schema": {"type": "object"}},
                                      {"kind": "check", "name": "has-text", "rule": "regex", "pattern": r"\w"}]},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_dir):
    folder = tmp_path_factory.mktemp("pipelines")
    proc = start_server(folder, {"models": DEFAULT_MODELS, "pipelines": PIPELINES,
                                 "responses": {"database": f"sqlite:///{folder}/state.db"}})
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def corpus(server):
    documents = rag_corpus(240, seed=0)
    http = httpx.Client(base_url=server.url, timeout=120)
    assert http.post("/v1/collections", json={"name": "atlas"}).status_code == 200
    for start in range(0, len(documents), 120):
        batch = [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in documents[start:start + 120]]
        answer = http.post("/v1/collections/atlas/documents", json={"documents": batch})
        assert answer.status_code == 200, answer.text
    return documents


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_the_source_document_is_among_the_sources_for_most_questions(client, corpus):
    questions = rag_questions(corpus, 50, seed=0)

    def ask(question):
        raw = client.chat.completions.with_raw_response.create(
            model="rag", messages=[{"role": "user", "content": question.text}])
        return raw.headers, raw.parse()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, questions))
    found = sum(q.document_id in [s["document_id"] for s in reply.infercloud["sources"]]
                for q, (_, reply) in zip(questions, answers))
    assert found >= 45, f"the source was among the sources for {found} of 50 questions"
    headers, reply = answers[0]
    report = reply.infercloud
    assert reply.model == "rag" and reply.choices[0].message.content
    assert [s["name"] for s in report["stages"]] == ["embed", "retrieve", "rerank", "generate", "check"]
    assert all(s["status"] == "ok" and s["elapsed_s"] >= 0 for s in report["stages"])
    assert len(report["sources"]) == 3 and report["checks"][0]["rule"] == "groundedness"
    assert headers["x-infercloud-pipeline"] == "rag" and headers["x-request-id"] == report["request_id"]
    assert [part.split(";")[0] for part in headers["server-timing"].split(", ")] == \
        ["embed", "retrieve", "rerank", "generate", "check"]
    usage = reply.usage.model_dump()
    stages = usage["stages"]
    assert set(stages) == {"embed", "rerank", "generate", "check"}   # retrieve searches by vector: no tokens
    assert stages["embed"]["model"] == "all-minilm-l6-v2" and stages["generate"]["model"] == "smollm2-135m-instruct"
    assert usage["prompt_tokens"] == sum(s["prompt_tokens"] for s in stages.values())
    assert usage["completion_tokens"] == stages["generate"]["completion_tokens"] > 0


def test_a_stage_out_of_time_is_skipped_or_fails_as_configured(client, corpus):
    question = "When was the town founded?"
    skipped = client.chat.completions.create(model="rag-skip", messages=[{"role": "user", "content": question}])
    stages = {s["name"]: s for s in skipped.infercloud["stages"]}
    assert stages["rerank"]["status"] == "skipped" and stages["rerank"]["reason"] == "out of time"
    assert stages["generate"]["status"] == "ok"
    assert len(skipped.infercloud["sources"]) == 8   # rerank skipped: the retrieval's passages, in its order
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="rag-fail", messages=[{"role": "user", "content": question}])
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "pipeline_deadline_exceeded" and "'rerank'" in caught.value.body["message"]


def test_a_streamed_pipeline_answer_is_valid_sse_with_sources_and_usage(client, corpus):
    question = rag_questions(corpus, 1, seed=3)[0]
    stream = client.chat.completions.create(model="rag", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": question.text}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1]
    assert text and final.choices == [] and final.model == "rag"
    assert final.usage.completion_tokens > 0 and "generate" in final.usage.model_dump()["stages"]
    assert question.document_id in [s["document_id"] for s in final.infercloud["sources"]]
    assert [s["status"] for s in final.infercloud["stages"]] == ["ok"] * 5


def test_checks_report_and_pipelines_are_listed_run_and_managed(server, corpus):
    http = httpx.Client(base_url=server.url, timeout=120)
    run = http.post("/v1/pipelines/json-check", json={"input": "Say hello."}).json()
    assert run["object"] == "pipeline.run" and run["output_text"]
    (schema, regex) = run["checks"]
    assert schema["rule"] == "json_schema" and schema["passed"] is False and regex["passed"] is True
    names = [p["id"] for p in http.get("/v1/pipelines").json()["data"]]
    assert names == ["rag", "rag-skip", "rag-fail", "json-check"]
    body = {"name": "made", "slo_s": 30, "stages": [{"kind": "embed"}, {"kind": "retrieve", "collection": "atlas"}]}
    assert http.post("/admin/pipelines", json=body).status_code == 401   # the internal token is the credential
    made = http.post("/admin/pipelines", json=body, headers=server.auth)
    assert made.status_code == 200, made.text
    assert http.post("/admin/pipelines", json=body, headers=server.auth).status_code == 409
    sources = http.post("/v1/pipelines/made", json={"input": "Where is the castle?"}).json()
    assert len(sources["sources"]) == 5 and sources["output_text"] == ""
    assert http.delete("/admin/pipelines/rag", headers=server.auth).status_code == 409   # the config's
    assert http.delete("/admin/pipelines/made", headers=server.auth).status_code == 200
    assert http.post("/v1/pipelines/made", json={"input": "x"}).status_code == 404


@pytest.mark.parametrize("body, status, param", [
    ({"model": "rag", "messages": []}, 400, "messages"),
    ({"model": "rag", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "tools": []}, 400, "tools"),
    ({"model": "rag", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, "max_tokens"),
])
def test_bad_pipeline_calls_are_openai_errors(server, body, status, param):
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"].startswith(param) and error["message"]


def test_a_collection_the_caller_lacks_is_a_404_naming_the_stage(server):
    body = {"name": "orphan", "stages": [{"kind": "embed"}, {"kind": "retrieve", "collection": "nowhere"}]}
    assert httpx.post(f"{server.url}/admin/pipelines", json=body, headers=server.auth).status_code == 200
    answer = httpx.post(f"{server.url}/v1/pipelines/orphan", json={"input": "x"}, timeout=60)
    assert answer.status_code == 404 and "'retrieve'" in answer.json()["error"]["message"]
