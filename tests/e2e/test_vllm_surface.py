"""The OpenAI/vLLM extras through a gateway with tenants: GET /v1/models/{id} per tenant, /tokenize and /detokenize
(authenticated, neither metered nor rate limited, answered by a native replica), /version, the resolved
service_tier in replies, embeddings `dimensions` errors passed through, and batches of completion prompts.

One gateway with tenancy (SQLite ledger) runs 1 SmolLM2 replica (`smol`), MiniLM (`minilm`) and `ghost`, a
model whose only replica is an external URL nobody answers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai
import pytest

import infercloud
from infercloud.cluster.local import free_port
from tests.e2e.conftest import ENGINE, SMOL, replicas, wait_for
from tests.worker.conftest import start_server

TENANTS = [{"name": "ops", "tier": "interactive"},
           {"name": "chatter", "tier": "standard", "models": ["smol", "ghost"]},
           {"name": "embedder", "tier": "batch", "models": ["minilm"], "requests_per_minute": 1}]
MESSAGES = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm2_dir):
    url = f"sqlite:///{tmp_path_factory.mktemp('db')}/ledger.db"
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "tenants": TENANTS},
        "models": [{"name": "smol", "path": SMOL, "replicas": 1, "engine": ENGINE},
                   {"name": "minilm", "path": "all-minilm-l6-v2", "kind": "embedding"},
                   {"name": "ghost", "replicas": 0, "external": [f"http://127.0.0.1:{free_port()}"]}],
    }
    server = start_server(tmp_path_factory.mktemp("vllm-surface"), config, startup_timeout_s=300)
    wait_for(lambda: all(r["state"] == "ready" for r in replicas(server, "smol") + replicas(server, "minilm")),
             "the native replicas to be ready")
    server.keys = {t["name"]: _create_key(t["name"], url) for t in TENANTS}
    yield server
    assert server.stop() == 0, server.log()


def _create_key(tenant: str, database: str) -> str:
    done = subprocess.run([sys.executable, "-m", "infercloud", "keys", "create", "--tenant", tenant, "--database",
                           database], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def call(gw, tenant: str | None, path: str, body: dict | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.keys[tenant]}"} if tenant else {}
    method = "POST" if body is not None else "GET"
    return httpx.request(method, gw.url + path, json=body, headers=headers, timeout=120)


def error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def client(gw, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.keys[tenant], max_retries=0)


# -- model cards ---------------------------------------------------------------------------------------------

def test_a_tenant_retrieves_its_models_and_no_others(gw):
    chatter = client(gw, "chatter")
    smol = chatter.models.retrieve("smol")
    assert (smol.id, smol.object, smol.owned_by) == ("smol", "model", "infercloud")
    listed = {m["id"]: m for m in call(gw, "chatter", "/v1/models").json()["data"]}
    assert call(gw, "chatter", "/v1/models/smol").json() == listed["smol"]
    assert smol.model_dump(exclude_unset=True) == listed["smol"]
    for hidden in ("minilm", "no-such-model"):
        with pytest.raises(openai.NotFoundError) as caught:
            chatter.models.retrieve(hidden)
        assert caught.value.code == "model_not_found"
    assert client(gw, "embedder").models.retrieve("minilm").id == "minilm"
    assert error(call(gw, None, "/v1/models/smol"), 401)["code"] == "missing_api_key"


# -- /tokenize, /detokenize, /version -----------------------------------------------------------------------------

def test_tokenize_and_detokenize_are_answered_by_a_native_replica(gw):
    prompt = "The capital of France is"
    tokens = call(gw, "chatter", "/tokenize", {"model": "smol", "prompt": prompt})
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["x-infercloud-replica"] in {r["replica_id"] for r in replicas(gw, "smol")}
    body = tokens.json()
    assert body["count"] == len(body["tokens"]) > 0 and body["max_model_len"] > body["count"]
    completion = client(gw, "chatter").completions.create(model="smol", prompt=prompt, max_tokens=1)
    assert completion.usage.prompt_tokens == body["count"]
    chat = call(gw, "chatter", "/tokenize", {"model": "smol", "messages": MESSAGES}).json()
    assert chat["count"] > body["count"]
    back = call(gw, "chatter", "/detokenize", {"model": "smol", "tokens": body["tokens"]})
    assert back.json() == {"prompt": prompt}


@pytest.mark.parametrize("tenant, path, body, status, code, param", [
    (None, "/tokenize", {"model": "smol", "prompt": "a"}, 401, "missing_api_key", None),
    ("chatter", "/tokenize", {"model": "minilm", "prompt": "a"}, 403, "model_not_allowed", "model"),
    ("chatter", "/detokenize", {"model": "minilm", "tokens": [101]}, 403, "model_not_allowed", "model"),
    ("chatter", "/tokenize", {"model": "nope", "prompt": "a"}, 404, "model_not_found", "model"),
    ("chatter", "/tokenize", {"prompt": "a"}, 400, None, "model"),
    ("chatter", "/tokenize", {"model": "ghost", "prompt": "a"}, 400, "not_supported", "model"),
    ("chatter", "/tokenize", {"model": "smol", "prompt": "a", "colour": "red"}, 400, "unsupported_field", "colour"),
    ("chatter", "/detokenize", {"model": "smol", "tokens": [-1]}, 400, None, "tokens"),
    ("embedder", "/tokenize", {"model": "minilm", "messages": MESSAGES}, 400, None, "messages"),
])
def test_tokenize_errors(gw, tenant, path, body, status, code, param):
    found = error(call(gw, tenant, path, body), status)
    assert (found["code"], found["param"]) == (code, param)


def test_tokenize_is_neither_rate_limited_nor_metered_and_dimensions_errors_pass_through(gw):
    for _ in range(3):   # the tenant may make 1 request a minute
        assert call(gw, "embedder", "/tokenize", {"model": "minilm", "prompt": "paged attention"}).status_code == 200
    assert call(gw, "embedder", "/v1/usage").json()["data"] == []
    refused = error(call(gw, "embedder", "/v1/embeddings", {"model": "minilm", "input": "a", "dimensions": 128}), 400)
    assert (refused["param"], refused["code"]) == ("dimensions", "unsupported_dimensions")
    limited = call(gw, "embedder", "/v1/embeddings", {"model": "minilm", "input": "a", "dimensions": 384})
    assert error(limited, 429)["code"] == "rate_limit_exceeded"
    native = call(gw, "ops", "/v1/embeddings", {"model": "minilm", "input": "a", "dimensions": 384})
    assert len(native.json()["data"][0]["embedding"]) == 384


def test_version_is_the_gateways_own(gw):
    assert call(gw, None, "/version").json() == {"version": infercloud.__version__}
    schema = call(gw, None, "/openapi.json").json()
    assert "/tokenize" in schema["paths"] and "TokenizeRequest" in schema["components"]["schemas"]


# -- service_tier --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tenant, asked, resolved", [
    ("chatter", None, "standard"), ("chatter", "flex", "batch"), ("chatter", "auto", "standard"),
    ("ops", "priority", "interactive"), ("ops", "batch", "batch"),
])
def test_the_reply_names_the_tier_the_gateway_resolved(gw, tenant, asked, resolved):
    extra = {"service_tier": asked} if asked else {}
    reply = call(gw, tenant, "/v1/chat/completions", {"model": "smol", "messages": MESSAGES, "max_tokens": 2, **extra})
    assert reply.status_code == 200, reply.text
    assert reply.json()["service_tier"] == resolved
    stream = call(gw, tenant, "/v1/chat/completions", {"model": "smol", "messages": MESSAGES, "max_tokens": 2,
                                                       "stream": True, **extra})
    chunks = [json.loads(line[6:]) for line in stream.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert chunks and {c["service_tier"] for c in chunks} == {resolved}


# -- batches of completion prompts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", [["One, two,", "Red, green,"], [[504, 28, 827, 28], [2029, 28]]])
def test_a_batch_of_prompts_is_routed_without_a_server_error(gw, prompt):
    reply = call(gw, "ops", "/v1/completions", {"model": "smol", "prompt": prompt, "max_tokens": 2, "n": 2})
    assert reply.status_code in (200, 400), reply.text   # 400 only while the worker takes one prompt
    if reply.status_code == 200:
        assert sorted(c["index"] for c in reply.json()["choices"]) == [0, 1, 2, 3]
    assert call(gw, None, "/health").status_code == 200
