"""Autoscaling end to end: a model with zero replicas answers its first request, goes back to zero when
idle, scales out under load and back in, draining, without failing a request."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.conftest import replicas, wait_for
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
AUTO = {"min_replicas": 0, "max_replicas": 2, "target_ongoing_requests": 2, "upscale_delay_s": 0,
        "downscale_delay_s": 3, "idle_to_zero_s": 6, "max_step": 1}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm2_dir, cluster_backend):
    config = {"cluster": {**cluster_backend, "threads_per_worker": 1},
              "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
              "gateway": {"hold_timeout_s": 120},
              "models": [{"name": "auto", "path": SMOL, "replicas": 0, "engine": {"kv_cache_memory_gb": 0.1},
                          "autoscaling": AUTO}]}
    server = start_server(tmp_path_factory.mktemp("autoscale"), config, startup_timeout_s=300)
    yield server
    assert server.stop() == 0, server.log()


def live(gw) -> int:
    return sum(r["state"] in ("starting", "ready") for r in replicas(gw, "auto"))


async def _stream(client: httpx.AsyncClient, max_tokens: int) -> str:
    body = {"model": "auto", "messages": [{"role": "user", "content": "Tell me about the sea."}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]", lines[-3:]
    return lines[-2]


def test_a_model_with_zero_replicas_answers_and_goes_back_to_zero_when_idle(gw):
    wait_for(lambda: live(gw) == 0, "the model to start at zero replicas", 10)
    answer = httpx.post(f"{gw.url}/v1/chat/completions", timeout=180,
                        json={"model": "auto", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert answer.status_code == 200, answer.text  # held at the gateway while a replica started
    assert live(gw) == 1
    wait_for(lambda: live(gw) == 0, "the idle model to be scaled to zero", 60)
    assert "autoscaler: auto 1 -> 0 replicas (no request for 6 s)" in gw.log()


def test_scales_out_under_load_and_back_in_without_failing_a_request(gw):
    async def main():
        async with httpx.AsyncClient(base_url=gw.url, timeout=300) as client:
            peak = [asyncio.create_task(_stream(client, 160)) for _ in range(6)]
            for _ in range(600):  # 6 streams want 3 replicas: up to the max of 2
                if live(gw) == 2:
                    break
                await asyncio.sleep(0.1)
            reached = live(gw)
            await asyncio.gather(*peak)
            # one stream at a time: the load wants 1 replica, so one is drained while streams run
            tail = []
            for _ in range(600):
                tail.append(await _stream(client, 16))
                if live(gw) == 1:
                    break
            return reached, len(tail)

    reached, _ = asyncio.run(main())
    assert reached == 2
    assert live(gw) == 1
    assert "autoscaler: auto 2 -> 1 replicas (load below 2 replicas for 3 s)" in gw.log()
