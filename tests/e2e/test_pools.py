"""Pools end to end: many models on shared workers whose memory holds only some at once.

Six random-weight models on 2 pool workers that each fit two: every request is answered, the models
come and go (coldest first: each is called once here, so least recently used), and a model with a
request in flight is never the one unloaded.
A pooled model also scales from zero (loaded on a running worker), back to zero (unloaded), and out
to two workers and back in (the removed copy drains) without failing a request.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from infercloud.engine.config import EngineConfig
from infercloud.engine.footprint import model_memory_bytes
from tests.e2e.conftest import replicas, wait_for
from tests.worker.conftest import start_server

ENGINE = {"num_kv_blocks": 160, "max_num_seqs": 8}
HOLD = {"min_replicas": 0, "max_replicas": 1, "idle_to_zero_s": 600}


def pool_budget_gb(model_dir, models_per_worker: float) -> float:
    return models_per_worker * model_memory_bytes(model_dir, "chat", EngineConfig(**ENGINE)) / 2**30


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, random_model_dirs, cluster_backend):
    config = {"cluster": {**cluster_backend, "threads_per_worker": 1, "pools": [
                  {"name": "shared", "workers": 2, "memory_gb": pool_budget_gb(random_model_dirs[0], 2.5)}]},
              "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
              "models": [{"name": f"rand-{i}", "path": str(d), "pool": "shared", "replicas": 0, "engine": ENGINE,
                          "autoscaling": HOLD} for i, d in enumerate(random_model_dirs)]}
    server = start_server(tmp_path_factory.mktemp("pools"), config, startup_timeout_s=300)
    yield server
    assert server.stop() == 0, server.log()


def resident(gw) -> dict[str, list[str]]:
    """Pool worker id -> the models loaded there, as the controller last read them."""
    return {w["worker_id"]: w["models"] for w in gw.state()["pool_workers"]}


def complete(gw, model: str) -> None:
    answer = httpx.post(f"{gw.url}/v1/completions", timeout=120,
                        json={"model": model, "prompt": "Hello", "max_tokens": 4})
    assert answer.status_code == 200, answer.text


def stream_in_background(gw, model: str, results: dict, started: threading.Event) -> threading.Thread:
    def run():
        body = {"model": model, "prompt": "Once", "max_tokens": 2000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{gw.url}/v1/completions", json=body, timeout=300) as response:
            last = None
            for line in response.iter_lines():
                if line.startswith("data: "):
                    last = line
                    started.set()
            results[model] = (response.status_code, last)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_six_models_on_two_workers_the_idle_model_is_the_one_unloaded(pooled):
    wait_for(lambda: len(resident(pooled)) == 2 and all(w["state"] == "ready"
                                                        for w in pooled.state()["pool_workers"]), "pool workers")
    for i in range(4):
        complete(pooled, f"rand-{i}")
    wait_for(lambda: sorted(m for ms in resident(pooled).values() for m in ms) ==
             ["rand-0", "rand-1", "rand-2", "rand-3"], "four models loaded, two per worker")
    layout = resident(pooled)
    assert sorted(map(sorted, layout.values())) == [["rand-0", "rand-1"], ["rand-2", "rand-3"]]  # packed

    # rand-0 and rand-2 (the least recently used on their workers) get long streams; rand-1 and rand-3 are idle
    results: dict = {}
    events = [threading.Event(), threading.Event()]
    threads = [stream_in_background(pooled, m, results, e) for m, e in zip(("rand-0", "rand-2"), events)]
    assert all(e.wait(60) for e in events)
    complete(pooled, "rand-4")        # no room anywhere: an idle model goes, not a busy older one
    complete(pooled, "rand-5")
    busy_then = {m for m in ("rand-0", "rand-2") if m not in results}
    wait_for(lambda: {"rand-4", "rand-5"} <= {m for ms in resident(pooled).values() for m in ms}, "the new models")
    loaded = {m for ms in resident(pooled).values() for m in ms}
    assert busy_then == {"rand-0", "rand-2"}, "the streams ended before the new models were loaded"
    assert loaded == {"rand-0", "rand-2", "rand-4", "rand-5"}
    for thread in threads:
        thread.join(120)
    assert {m: r[0] for m, r in results.items()} == {"rand-0": 200, "rand-2": 200}
    assert results["rand-0"][1] == "data: [DONE]" == results["rand-2"][1]

    complete(pooled, "rand-1")        # an unloaded model is answered again: loaded in place of an idle one
    wait_for(lambda: sum(w["num_evictions"] or 0 for w in pooled.state()["pool_workers"]) >= 3,
             "a third unload (probes lag by up to one interval)")
    workers = pooled.state()["pool_workers"]
    assert all(w["memory_used_bytes"] <= w["memory_budget_bytes"] for w in workers)
    models = {m["id"]: m for m in httpx.get(f"{pooled.url}/v1/models").json()["data"]}
    assert models["rand-3"]["random_weights"] is True


@pytest.fixture(scope="module")
def elastic(tmp_path_factory, random_model_dirs, cluster_backend):
    auto = {"min_replicas": 0, "max_replicas": 2, "target_ongoing_requests": 2, "upscale_delay_s": 0,
            "downscale_delay_s": 3, "idle_to_zero_s": 4, "max_step": 1}
    config = {"cluster": {**cluster_backend, "threads_per_worker": 1, "pools": [
                  {"name": "shared", "workers": 2, "memory_gb": pool_budget_gb(random_model_dirs[0], 3)}]},
              "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
              "gateway": {"hold_timeout_s": 60},
              "models": [{"name": "elastic", "path": str(random_model_dirs[0]), "pool": "shared", "replicas": 0,
                          "engine": ENGINE, "autoscaling": auto}]}
    server = start_server(tmp_path_factory.mktemp("pools-elastic"), config, startup_timeout_s=300)
    yield server
    assert server.stop() == 0, server.log()


def live(gw) -> int:
    return sum(r["state"] in ("starting", "ready") for r in replicas(gw, "elastic"))


def test_pooled_model_from_zero_out_to_two_workers_in_and_back_to_zero(elastic):
    wait_for(lambda: all(w["state"] == "ready" for w in elastic.state()["pool_workers"]), "pool workers")
    complete(elastic, "elastic")                          # held, loaded on a running worker, answered
    assert live(elastic) == 1

    async def streams():
        async with httpx.AsyncClient(base_url=elastic.url, timeout=300) as client:
            async def one():
                body = {"model": "elastic", "prompt": "Once", "max_tokens": 1500, "ignore_eos": True, "stream": True}
                async with client.stream("POST", "/v1/completions", json=body) as response:
                    lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
                return response.status_code, lines[-1]
            tasks = [asyncio.create_task(one()) for _ in range(6)]
            for _ in range(600):
                if live(elastic) == 2:
                    break
                await asyncio.sleep(0.05)
            return live(elastic), await asyncio.gather(*tasks)

    peak, results = asyncio.run(streams())
    assert peak == 2
    spread = [r["worker"] for r in replicas(elastic, "elastic")]
    assert results == [(200, "data: [DONE]")] * 6        # the copy scaled in drained: nothing failed
    wait_for(lambda: live(elastic) == 0, "the idle model to be scaled to zero", 60)
    wait_for(lambda: all("elastic" not in w["models"] for w in elastic.state()["pool_workers"]),
             "the model to be unloaded from every worker", 30)
    assert len(set(spread)) == len(spread)               # its copies were on different workers
    assert "(no request for 4 s)" in elastic.log()
