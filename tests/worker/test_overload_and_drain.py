"""A small server (one running sequence, no waiting room): overload gets 503 + Retry-After; SIGTERM drains."""

from __future__ import annotations

import signal
import threading

import httpx

from tests.worker.conftest import start_server

CHAT = "smollm2-135m-instruct"
LONG = {"model": CHAT, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 48,
        "temperature": 0, "ignore_eos": True}


def _start_long_request(url: str, results: list) -> threading.Thread:
    def run():
        results.append(httpx.post(f"{url}/v1/chat/completions", json=LONG, timeout=120))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_in_flight(server, n: int = 1) -> None:
    for _ in range(300):
        if server.state()["in_flight"] >= n and server.state()["models"][CHAT]["running"] >= 1:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the long request never started")


def test_overload_then_sigterm_drains(tmp_path, smollm2_dir):
    server = start_server(tmp_path, {"models": [{"name": CHAT, "engine": {"max_num_seqs": 1,
                                                                          "kv_cache_memory_gb": 0.1}}],
                                     "max_waiting": 0, "drain_timeout_s": 60})
    try:
        results: list[httpx.Response] = []
        first = _start_long_request(server.url, results)
        _wait_in_flight(server)
        overloaded = httpx.post(f"{server.url}/v1/chat/completions", json=LONG, timeout=30)
        assert overloaded.status_code == 503 and overloaded.headers["Retry-After"]
        assert overloaded.json()["error"]["code"] == "overloaded"
        first.join(120)
        assert results[0].status_code == 200

        second = _start_long_request(server.url, results)
        _wait_in_flight(server)
        server.proc.send_signal(signal.SIGTERM)
        for _ in range(100):
            if server.state()["draining"]:
                break
            threading.Event().wait(0.05)
        refused = httpx.post(f"{server.url}/v1/chat/completions", json=LONG, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        second.join(120)
        assert results[1].status_code == 200
        assert results[1].json()["usage"]["completion_tokens"] == 48  # finished whole, not cut
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
