"""The cloud as a hostile tenant or local process sees it: the gateway's public port serves the API and
/health only, the workers answer nobody but the gateway, the internal token never leaves the internal
plane, metrics labels stay bounded, and a stream that loses its last replica ends in an error the
official client raises.

One gateway (no tenancy) with one SmolLM2 replica and an external "vendor" server that records every
request it gets. Tests run in file order; the last one kills the replica.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from openai import OpenAI

from infercloud.internal_token import client_token
from tests.e2e.conftest import ENGINE, SMOL, replicas, wait_for
from tests.worker.conftest import start_server


class _Vendor(BaseHTTPRequestHandler):
    """An external OpenAI-compatible replica that keeps the headers of every request it gets."""

    seen: list[dict[str, str]] = []

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.seen.append(dict(self.headers))
        self._answer({"status": "ok"})

    def do_POST(self):  # noqa: N802
        self.seen.append(dict(self.headers))
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer({"id": "cmpl-vendor", "object": "text_completion", "created": 0, "model": "vendor",
                      "choices": [{"index": 0, "text": " Paris", "finish_reason": "stop", "logprobs": None}],
                      "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def vendor():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Vendor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, vendor, smollm2_dir):
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "models": [{"name": SMOL, "replicas": 1, "engine": ENGINE},
                   {"name": "vendor", "replicas": 0, "external": [vendor]}],
    }
    server = start_server(tmp_path_factory.mktemp("security"), config, startup_timeout_s=300)
    wait_for(lambda: all(r["state"] == "ready" for r in server.state()["replicas"]), "every replica to be ready")
    yield server
    server.stop()


def _worker_url(gateway) -> str:
    (replica,) = replicas(gateway, SMOL)
    return replica["url"]


@pytest.mark.parametrize("method, path", [("GET", "/internal/state"), ("POST", "/internal/sync"),
                                          ("GET", "/metrics"), ("GET", "/internal/nothing"), ("GET", "/docs")])
def test_the_gateways_public_port_serves_only_the_api_and_health(gateway, method, path):
    r = httpx.request(method, gateway.url + path, json={}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "internal_token_required", r.text
    assert "recent_prefix_block_hashes" not in r.text
    assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{gateway.url}/v1/models", timeout=10).status_code == 200


def test_the_token_opens_the_internal_plane(gateway):
    state = gateway.state()
    assert state["role"] == "gateway" and "recent_prefix_block_hashes" in json.dumps(state)
    assert httpx.get(f"{gateway.url}/metrics", headers=gateway.auth, timeout=10).status_code == 200


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/chat/completions", {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
    ("POST", "/v1/completions", {"model": SMOL, "prompt": "Hi", "max_tokens": 2, "cache_salt": "x"}),
    ("GET", "/v1/models", None), ("GET", "/internal/usage/some-request", None), ("GET", "/internal/state", None),
    ("POST", "/internal/unload", {"model": SMOL}), ("POST", "/internal/drain", {}), ("GET", "/metrics", None),
    ("GET", "/openapi.json", None), ("POST", "/tokenize", {"model": SMOL, "prompt": "Hi"}),
    ("POST", "/detokenize", {"model": SMOL, "tokens": [1]}), ("GET", "/version", None),
    ("GET", f"/v1/models/{SMOL}", None),
])
def test_a_clouds_worker_answers_nobody_but_the_gateway(gateway, method, path, body):
    url = _worker_url(gateway)
    r = httpx.request(method, url + path, json=body, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "internal_token_required", r.text
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert [x["state"] for x in replicas(gateway, SMOL)] == ["ready"]       # not drained, not unloaded


def test_the_gateway_shows_the_token_to_its_workers(gateway):
    r = httpx.post(f"{_worker_url(gateway)}/v1/completions", headers=gateway.auth, timeout=60,
                   json={"model": SMOL, "prompt": "Hi", "max_tokens": 2})
    assert r.status_code == 200, r.text
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused")
    assert client.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=2).choices


def test_an_external_replica_never_sees_the_internal_token(gateway):
    _Vendor.seen.clear()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused")
    assert client.completions.create(model="vendor", prompt="The capital of France is").choices[0].text == " Paris"
    wait_for(lambda: len(_Vendor.seen) >= 2, "a probe of the vendor")      # the request and a health probe
    token = client_token()
    assert not [h for h in _Vendor.seen if any(token in v for v in h.values())]


def test_tokenize_goes_to_a_native_worker_with_the_token_never_to_an_external_replica(gateway):
    _Vendor.seen.clear()
    tokens = httpx.post(f"{gateway.url}/tokenize", json={"model": SMOL, "prompt": "Hi"}, timeout=30)
    assert tokens.status_code == 200 and tokens.json()["count"] > 0, tokens.text
    refused = httpx.post(f"{gateway.url}/detokenize", json={"model": "vendor", "tokens": [1]}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_supported"
    assert not [h for h in _Vendor.seen if "Content-Length" in h]   # only probes reached it, no request


def test_unknown_model_names_do_not_grow_the_metrics(gateway):
    """2,000 requests with distinct 200-character model names: each a 404, all counted in one bucket."""
    def size() -> int:
        return len(httpx.get(f"{gateway.url}/metrics", headers=gateway.auth, timeout=30).content)

    before = size()
    with httpx.Client(timeout=30) as client:
        for i in range(2000):
            r = client.post(f"{gateway.url}/v1/completions", json={"model": f"{i:06d}-{uuid.uuid4().hex * 6}",
                                                                   "prompt": "x"})
            assert r.status_code == 404
    after = size()
    print(f"gateway /metrics: {before} bytes before, {after} bytes after 2,000 unknown model names")
    assert after - before < 10_000, (before, after)   # one "other" series, not 2,000
    text = httpx.get(f"{gateway.url}/metrics", headers=gateway.auth, timeout=30).text
    assert 'model="other",status="404"} 2000.0' in text.replace('endpoint="/v1/completions",', "")


def test_a_stream_that_loses_its_last_replica_raises_in_the_openai_client(gateway):
    """HTTP 200 was sent with the first token; the replica dies and none can resume the stream: the
    stream ends with an SSE error event, which the official client raises as an APIError."""
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Tell a long story."}],
                                            max_tokens=400, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    (replica,) = replicas(gateway, SMOL)
    os.kill(replica["pid"], signal.SIGKILL)
    with pytest.raises(openai.APIError) as raised:
        for _ in chunks:
            pass
    assert "no_replica_available" in str(raised.value.body) or "replica" in str(raised.value).lower()
