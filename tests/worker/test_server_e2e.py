"""The OpenAI-compatible server, end to end: a real process on 127.0.0.1 driven by the official `openai` client."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time

import httpx
import numpy as np
import openai
import pytest

from infercloud.engine.tokenizer import Tokenizer
from infercloud.models.local import LocalModel

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return Tokenizer(LocalModel.open(smollm2_dir))


def wait_idle(server, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        state = server.state()["models"][CHAT]
        if state["running"] == 0 and state["waiting"] == 0 and state["kv_blocks_used"] == 0:
            return state
        if time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def test_models_health_metrics_state(server, client):
    assert {m.id for m in client.models.list().data} == {CHAT, EMBED}
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["models"][CHAT]["alive"]
    state = server.state()
    assert state["draining"] is False and state["models"][CHAT]["kv_blocks_total"] > 0
    client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=4)
    metrics = httpx.get(f"{server.url}/metrics", headers=server.auth).text
    for name in ("infercloud_requests_total", "infercloud_time_to_first_token_seconds_bucket",
                 "infercloud_time_per_output_token_seconds", "infercloud_e2e_request_latency_seconds",
                 "infercloud_request_queue_time_seconds", "infercloud_running", "infercloud_waiting",
                 "infercloud_kv_blocks_used", "infercloud_prefix_cache_hit_rate", "infercloud_prompt_tokens_total",
                 "infercloud_generation_tokens_total"):
        assert name in metrics, name


def test_chat_plain_and_streamed_agree(client, tokenizer):
    plain = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=40, temperature=0,
                                           logprobs=True)
    text = plain.choices[0].message.content
    assert "Paris" in text and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.prompt_tokens == len(tokenizer.encode_chat(MESSAGES))
    assert plain.usage.completion_tokens == len(plain.choices[0].logprobs.content)
    stream = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=40, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == text
    assert finish == plain.choices[0].finish_reason
    assert usage.prompt_tokens == plain.usage.prompt_tokens
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_completions_string_and_token_ids(client, tokenizer):
    by_text = client.completions.create(model=CHAT, prompt="The capital of France is", max_tokens=8, temperature=0)
    ids = tokenizer.encode("The capital of France is")
    by_ids = client.completions.create(model=CHAT, prompt=ids, max_tokens=8, temperature=0, logprobs=2)
    assert by_text.choices[0].text == by_ids.choices[0].text and by_text.choices[0].text.strip()
    assert by_ids.usage.prompt_tokens == len(ids)
    assert len(by_ids.choices[0].logprobs.tokens) == by_ids.usage.completion_tokens
    assert all(len(top) == 2 for top in by_ids.choices[0].logprobs.top_logprobs)


def test_embeddings_related_pair_is_closer(client):
    out = client.embeddings.create(model=EMBED, input=["A man is playing a guitar.", "Someone plays an instrument.",
                                                       "The stock market fell sharply today."])
    a, b, c = (np.array(d.embedding) for d in out.data)
    assert a.shape == (384,) and math.isclose(np.linalg.norm(a), 1.0, rel_tol=1e-4)
    assert a @ b > a @ c + 0.2
    assert out.usage.prompt_tokens > 10
    raw = httpx.post(f"{client.base_url}embeddings",
                     json={"model": EMBED, "input": "A man is playing a guitar.", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, a, atol=1e-6)


def test_n_stop_and_seed(client):
    two = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=16, temperature=1.0, n=2, seed=5)
    assert [c.index for c in two.choices] == [0, 1]
    again = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=16, temperature=1.0, n=2, seed=5)
    assert [c.message.content for c in two.choices] == [c.message.content for c in again.choices]
    assert two.choices[0].message.content != two.choices[1].message.content
    full = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=40, temperature=0)
    cut = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=40, temperature=0, stop=["Paris"])
    text = full.choices[0].message.content
    assert cut.choices[0].message.content == text[:text.index("Paris")]
    assert cut.choices[0].finish_reason == "stop"
    extra = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=8, temperature=0.8, seed=3,
                                           extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1,
                                                       "min_tokens": 8, "ignore_eos": True})
    assert extra.usage.completion_tokens == 8


def test_sixteen_concurrent_streams(server):
    async def one(client, i):
        stream = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": f"Count to {i + 3}."}], max_tokens=24,
            temperature=0.5, seed=i, stream=True)
        text, finish = "", None
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        return text, finish

    async def main():
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        return await asyncio.gather(*(one(client, i) for i in range(16)))

    results = asyncio.run(main())
    assert len(results) == 16 and all(text and finish in ("stop", "length") for text, finish in results)
    assert wait_idle(server)["kv_blocks_used"] == 0


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_error_statuses(server, client):
    url = f"{server.url}/v1/chat/completions"
    bad_json = httpx.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and _error(bad_json)["type"] == "invalid_request_error"

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, extra_body={"tools_choice_x": 1})
    assert err.value.status_code == 400 and "tools_choice_x" in err.value.message
    assert err.value.body["param"] == "tools_choice_x"

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, temperature=5)
    assert err.value.body["param"] == "temperature"

    missing = httpx.post(url, json={"model": CHAT})
    assert missing.status_code == 400 and _error(missing)["param"] == "messages"

    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert err.value.status_code == 404 and err.value.body["code"] == "model_not_found"

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "word " * 6000}],
                                       max_tokens=4000)
    assert "8192" in err.value.message and "4000" in err.value.message

    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=CHAT, input="chat models do not embed")

    too_big = httpx.post(url, json={"model": CHAT, "messages": [{"role": "user", "content": "x" * 300_000}]})
    assert too_big.status_code == 413 and _error(too_big)["code"] == "request_too_large"

    unknown_route = httpx.get(f"{server.url}/v1/nothing-here")
    assert unknown_route.status_code == 404 and "error" in unknown_route.json()
    assert httpx.get(f"{server.url}/health").status_code == 200  # still alive after all of it


def test_disconnects_abort_and_free_blocks(server):
    body = {"model": CHAT, "messages": MESSAGES, "max_tokens": 2000, "temperature": 0, "ignore_eos": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}) as r:
            lines = 0
            for line in r.iter_lines():
                lines += line.startswith("data: ")
                if lines >= 5:
                    break
        assert server.state()["models"][CHAT]["kv_blocks_used"] >= 0
    assert wait_idle(server)["kv_blocks_used"] == 0

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(1.5, connect=5))
    assert wait_idle(server)["kv_blocks_used"] == 0


def test_usage_carries_device_seconds_and_is_kept_by_request_id(server):
    body = {"model": CHAT, "messages": MESSAGES, "max_tokens": 8, "priority": 2, "cache_salt": "tenant-a"}
    plain = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"X-Request-Id": "usage-plain"},
                       timeout=60)
    assert plain.status_code == 200, plain.text
    usage = plain.json()["usage"]
    assert usage["device_seconds"] > 0
    kept = httpx.get(f"{server.url}/internal/usage/usage-plain", headers=server.auth).json()
    assert kept["outcome"] == "ok"
    assert {k: kept[k] for k in usage} == usage
    assert httpx.get(f"{server.url}/internal/usage/never-seen", headers=server.auth).status_code == 404


def test_cache_salt_keeps_prefix_blocks_apart(server):
    long_system = [{"role": "system", "content": "You are a careful assistant. " * 30}, *MESSAGES]

    def cached(salt: str | None) -> int:
        body = {"model": CHAT, "messages": long_system, "max_tokens": 1, **({"cache_salt": salt} if salt else {})}
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
        return response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    cached("salt-a")
    assert cached("salt-a") > 100           # the same salt hits its own blocks
    assert cached("salt-b") == 0            # another salt sees none of them
    assert cached(None) == 0                # nor does an unsalted request


def test_continuous_usage_stats_put_usage_so_far_on_every_chunk(server):
    body = {"model": CHAT, "messages": MESSAGES, "max_tokens": 5, "ignore_eos": True, "stream": True,
            "stream_options": {"continuous_usage_stats": True}}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    counts = [c["usage"]["completion_tokens"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert counts == sorted(counts) and counts[-1] == 5
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
