"""/v1/embeddings limits end to end, on a real worker process: per-input length, truncation, the per-request
token cap, and a client that leaves a big request (its batches stop)."""

from __future__ import annotations

import math
import time

import httpx
import numpy as np
import pytest

from tests.worker.conftest import start_server

EMBED = "all-minilm-l6-v2"
MAX_BATCH_SIZE = 8
MAX_REQUEST_TOKENS = 120_000
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and"]   # one token each for MiniLM's tokenizer


def words(n: int, offset: int = 0) -> str:
    """n words of one token each: with [CLS] and [SEP], a text of n + 2 tokens."""
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = {"name": EMBED, "kind": "embedding", "max_batch_size": MAX_BATCH_SIZE,
             "max_request_tokens": MAX_REQUEST_TOKENS}
    proc = start_server(tmp_path_factory.mktemp("embeddings-limits"), {"models": [model]})
    yield proc
    assert proc.stop() == 0, proc.log()


def embed(server, timeout: float = 120, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", json={"model": EMBED, **body}, timeout=timeout)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]])


def error(response: httpx.Response) -> dict:
    return response.json()["error"]


def test_an_input_over_the_model_limit_is_refused_naming_limit_length_and_index(server):
    refused = embed(server, input=["short", words(300)])
    assert refused.status_code == 400
    err = error(refused)
    assert err["param"] == "input" and err["type"] == "invalid_request_error"
    assert "Input 1" in err["message"] and "302 tokens" in err["message"] and "256" in err["message"]
    ids = embed(server, input=[101] + [1996] * 300 + [102])
    assert ids.status_code == 400 and "Input 0 has 302 tokens" in error(ids)["message"]
    assert embed(server, input=words(254)).status_code == 200   # exactly 256 tokens is within the limit


def test_truncate_prompt_tokens_cuts_as_sentence_transformers_does(server):
    to_limit = embed(server, input=words(300), truncate_prompt_tokens=-1)
    assert to_limit.json()["usage"]["prompt_tokens"] == 256
    np.testing.assert_allclose(vectors(to_limit), vectors(embed(server, input=words(254))), atol=1e-5)
    to_k = embed(server, input=[words(300), "short"], truncate_prompt_tokens=10)
    assert to_k.json()["usage"]["prompt_tokens"] == 10 + 3
    np.testing.assert_allclose(vectors(to_k), vectors(embed(server, input=[words(8), "short"])), atol=1e-5)
    ids = [101, *range(2000, 2300), 102]
    first_ids = embed(server, input=ids, truncate_prompt_tokens=20)
    np.testing.assert_allclose(vectors(first_ids), vectors(embed(server, input=ids[:20])), atol=1e-5)
    for bad in (0, -2, 257):
        refused = embed(server, input="short", truncate_prompt_tokens=bad)
        assert refused.status_code == 400 and error(refused)["param"] == "truncate_prompt_tokens", refused.text


def test_total_tokens_and_input_count_are_capped_per_request(server):
    over = embed(server, input=[words(200, i) for i in range(600)])   # 600 x 202 = 121,200 tokens
    assert over.status_code == 400
    assert error(over)["param"] == "input"
    assert "121200" in error(over)["message"] and str(MAX_REQUEST_TOKENS) in error(over)["message"]
    too_many = embed(server, input=["hi"] * 2049)
    assert too_many.status_code == 400 and "2048" in error(too_many)["message"]
    assert server.state()["models"][EMBED]["in_flight"] == 0


def wait_no_embedding_in_flight(server, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while (state := server.state()["models"][EMBED])["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


def test_a_client_that_leaves_stops_its_batches(server):
    big = [words(98, i) for i in range(1024)]              # 1,024 x 100 tokens: 128 batches of 8
    full_job = math.ceil(len(big) / MAX_BATCH_SIZE)
    before = server.state()["models"][EMBED]
    with pytest.raises(httpx.ReadTimeout):                  # the client gives up and closes its connection
        embed(server, input=big, timeout=httpx.Timeout(2.0, connect=10))
    left = wait_no_embedding_in_flight(server)
    assert left["in_flight"] == 0
    assert embed(server, input="after").status_code == 200  # the batch that was running has ended too
    after = server.state()["models"][EMBED]
    big_batches = after["batches"] - before["batches"] - 1
    assert big_batches < full_job // 2, (big_batches, full_job)
    assert after["inputs_dropped"] - before["inputs_dropped"] == len(big) - MAX_BATCH_SIZE * big_batches
