"""The single-box server as a hostile local process sees it: the API and /health answer anyone on
loopback; /internal/*, /metrics and any other path need the internal token; bad input is a 400, never a 500."""

from __future__ import annotations

import httpx
import pytest

from infercloud.config import ConfigError, load_config

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("method, path", [
    ("GET", "/internal/state"), ("GET", "/internal/usage/anything"), ("POST", "/internal/unload"),
    ("POST", "/internal/drain"), ("POST", "/internal/load"), ("GET", "/metrics"), ("GET", "/no/such/route"),
    ("GET", "/internal"), ("GET", "/docs"),
])
def test_the_internal_plane_needs_the_token(server, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": server.auth[
            "Authorization"].removeprefix("Bearer ")}):
        r = httpx.request(method, server.url + path, headers=headers, timeout=10, json={"model": CHAT})
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "internal_token_required"
    assert server.state()["models"][CHAT]["loaded"]          # the drain and unload above did nothing


def test_the_public_api_and_health_answer_without_the_token(server):
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=10)
    assert metrics.status_code == 200 and "infercloud_requests_total" in metrics.text


def test_openapi_describes_the_request_bodies(server):
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"), ("/v1/completions", "CompletionRequest"),
                        ("/v1/embeddings", "EmbeddingRequest")):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
    chat = schema["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"]) and "temperature" in chat["properties"]
    assert not [p for p in schema["paths"] if p.startswith("/internal") or p == "/metrics"]


def _post(server, path: str, raw: bytes) -> httpx.Response:
    return httpx.post(server.url + path, content=raw, headers={"Content-Type": "application/json"}, timeout=60)


@pytest.mark.parametrize("path, raw, param", [
    ("/v1/chat/completions", b'{"model": "%s", "messages": [{"role": "user", "content": "a\\ud800b"}]}' % CHAT.encode(),
     "messages"),
    ("/v1/completions", b'{"model": "%s", "prompt": "\\udfff"}' % CHAT.encode(), "prompt"),
    ("/v1/embeddings", b'{"model": "%s", "input": ["fine", "\\ud83d"]}' % EMBED.encode(), "input"),
    ("/v1/chat/completions", b'{"model": "%s", "messages": [], "x": %s1%s}' % (CHAT.encode(), b"[" * 5000, b"]" * 5000),
     None),
    ("/v1/chat/completions", b'{"model": "%s", "messages": [], "x": %s1%s}' % (CHAT.encode(), b"[" * 100, b"]" * 100),
     "x"),
    ("/v1/completions", b'{"model": "%s", "prompt": "Hi", "seed": %d}' % (CHAT.encode(), 2**63), "seed"),
    ("/v1/completions", b'{"model": "%s", "prompt": "Hi", "seed": %d}' % (CHAT.encode(), -2**63 - 1), "seed"),
    ("/v1/completions", b'{"model": "%s", "prompt": "Hi", "temperature": NaN}' % CHAT.encode(), None),
])
def test_client_input_that_used_to_500_is_a_400_naming_the_field(server, path, raw, param):
    r = _post(server, path, raw)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_a_valid_surrogate_pair_and_the_int64_seed_range_still_work(server):
    emoji = _post(server, "/v1/completions", b'{"model": "%s", "prompt": "\\ud83d\\ude00", "max_tokens": 2, '
                                             b'"seed": %d}' % (CHAT.encode(), 2**63 - 1))
    assert emoji.status_code == 200, emoji.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.0.9", "localhost", "::1"])
def test_every_loopback_address_may_serve_an_open_api(host):
    assert load_config(host=host).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "example.com"])
def test_other_addresses_need_tenancy(host):
    with pytest.raises(ConfigError, match="not loopback"):
        load_config(host=host)
