"""A Ray node dies under load (infercloud/cluster/ray_local.py: the second node, region-b, is killed as a machine
that crashes): its replica is placed again in the nearest region that has a node, the streams it was
serving resume there, and no request the gateway accepted fails. When the node comes back, the
region's replica moves home (the stand-in drains once the new one is ready). A pool of region-b does
the same with its worker: placed again in region-a, and back home once region-b has a node."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import replicas, wait_for
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
REGION_A, REGION_B = "region-a", "region-b"      # the ray_cluster fixture's nodes 0 and 1
TOKENS = 120


@pytest.fixture(scope="module")
def geo(tmp_path_factory, ray_cluster, smollm2_dir, random_model_dirs):
    config = {
        "cluster": {"backend": "ray", "address": ray_cluster.address, "threads_per_worker": 1,
                    "pools": [{"name": "edge", "workers": 1, "memory_gb": 0.5, "region": REGION_B}]},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "regions": [{"name": REGION_A, "latency_ms": {REGION_B: 30}}, {"name": REGION_B}],
        "models": [{"name": "smol", "path": SMOL, "regions": {REGION_A: 1, REGION_B: 1},
                    "engine": {"kv_cache_memory_gb": 0.1}},
                   {"name": "tiny", "path": str(random_model_dirs[0]), "pool": "edge",
                    "engine": {"num_kv_blocks": 64, "max_num_seqs": 4}}],
    }
    server = start_server(tmp_path_factory.mktemp("nodes"), config, startup_timeout_s=300)
    yield server
    assert server.stop() == 0, server.log()


def placement(gw) -> list[tuple[str, str, str]]:
    """(slot's region, region it runs in, state) of each replica, sorted."""
    return sorted((r["wanted_region"], r["region"], r["state"]) for r in replicas(gw, "smol"))


def pool(gw) -> list[tuple[str, str, list[str]]]:
    """(region, state, models) of each worker of the `edge` pool (its region is region-b)."""
    return [(w["region"], w["state"], w["models"]) for w in gw.state()["pool_workers"]]


def tiny(gw) -> int:
    return httpx.post(f"{gw.url}/v1/completions", timeout=120,
                      json={"model": "tiny", "prompt": "Hi", "max_tokens": 4}).status_code


async def _stream(client: httpx.AsyncClient, started: list[int]) -> tuple[int, int, str]:
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": TOKENS, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/completions", json=body, headers={"x-infercloud-region": REGION_B}) as r:
        lines = []
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                lines.append(line)
                started[0] += 1
    usage = httpx.Response(200, content=lines[-2][6:]).json()["usage"]
    return r.status_code, usage["completion_tokens"], lines[-1]


def _migrations(gw) -> float:
    text = httpx.get(f"{gw.url}/metrics", headers=gw.auth, timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('infercloud_gateway_migrations_total{model="smol"}'))


def test_stopping_a_node_places_its_replica_again_and_fails_no_request(geo, ray_cluster):
    assert placement(geo) == [(REGION_A, REGION_A, "ready"), (REGION_B, REGION_B, "ready")]
    wait_for(lambda: pool(geo) == [(REGION_B, "ready", ["tiny"])], "the edge pool's worker in region-b")
    unary: list[int] = []
    stop = threading.Event()

    def steady_requests():                       # one request after another for region-b, throughout
        while not stop.is_set():
            r = httpx.post(f"{geo.url}/v1/completions", timeout=120, headers={"x-infercloud-region": REGION_B},
                           json={"model": "smol", "prompt": "Hi", "max_tokens": 8})
            unary.append(r.status_code)

    async def main():
        started = [0]
        async with httpx.AsyncClient(base_url=geo.url, timeout=300) as client:
            streams = [asyncio.create_task(_stream(client, started)) for _ in range(4)]
            while started[0] < 4 * 5:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(ray_cluster.kill_node, 1)       # region-b's only node
            return await asyncio.gather(*streams)

    thread = threading.Thread(target=steady_requests)
    thread.start()
    try:
        results = asyncio.run(main())
        wait_for(lambda: placement(geo) == [(REGION_A, REGION_A, "ready"), (REGION_B, REGION_A, "ready")],
                 "region-b's replica to be placed again in region-a")
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(120)
    assert results == [(200, TOKENS, "data: [DONE]")] * 4       # every stream whole, resumed elsewhere
    assert _migrations(geo) >= 4
    assert unary and set(unary) == {200}, unary
    wait_for(lambda: pool(geo) == [(REGION_A, "ready", ["tiny"])], "the edge pool's worker placed again in region-a")
    assert tiny(geo) == 200

    ray_cluster.start_node(1)                                      # the node comes back: the replica goes home
    wait_for(lambda: placement(geo) == [(REGION_A, REGION_A, "ready"), (REGION_B, REGION_B, "ready")],
             "region-b's replica to move back to region-b")
    r = httpx.post(f"{geo.url}/v1/completions", timeout=120, headers={"x-infercloud-region": REGION_B},
                   json={"model": "smol", "prompt": "Hi", "max_tokens": 4})
    assert r.status_code == 200 and r.headers["x-infercloud-region"] == REGION_B
    wait_for(lambda: pool(geo) == [(REGION_B, "ready", ["tiny"])], "the edge pool back home, its stand-in retired")
    assert tiny(geo) == 200
