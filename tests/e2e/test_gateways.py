"""Two gateways, one controller: the first gateway runs the controller and its workers, the second names
it (`gateway.controller_url`) and routes over the same replicas (gateway/link.py).

Models are tiny random-weight Llamas: `steady` has 2 replicas, `lazy` scales from zero.
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from tests.e2e.conftest import wait_for
from tests.worker.conftest import start_server

ENGINE = {"num_kv_blocks": 64, "max_num_seqs": 4}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, random_model_dirs):
    models = [{"name": "steady", "path": str(random_model_dirs[0]), "replicas": 2, "routing": "round_robin",
               "engine": ENGINE},
              {"name": "lazy", "path": str(random_model_dirs[1]), "replicas": 0, "engine": ENGINE,
               "autoscaling": {"min_replicas": 0, "max_replicas": 1, "idle_to_zero_s": 600}}]
    first = start_server(tmp_path_factory.mktemp("gw-first"), {
        "cluster": {"threads_per_worker": 1}, "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "models": models}, startup_timeout_s=300)
    second = start_server(tmp_path_factory.mktemp("gw-second"), {
        "gateway": {"controller_url": first.url, "sync_interval_s": 0.25, "hold_timeout_s": 120}, "models": models})
    yield first, second
    assert second.stop() == 0, second.log()
    assert first.stop() == 0, first.log()


def ready(gw, model: str) -> set[str]:
    return {r["replica_id"] for r in gw.state()["replicas"] if r["model"] == model and r["state"] == "ready"}


def complete(gw, model: str) -> httpx.Response:
    r = httpx.post(f"{gw.url}/v1/completions", timeout=150, json={"model": model, "prompt": "Hello", "max_tokens": 4})
    assert r.status_code == 200, r.text
    return r


def test_the_second_gateway_routes_over_the_first_ones_replicas(pair):
    first, second = pair
    wait_for(lambda: len(ready(second, "steady")) == 2, "the second gateway to see both replicas")
    assert ready(second, "steady") == ready(first, "steady")
    served = {complete(second, "steady").headers["x-infercloud-replica"] for _ in range(12)}
    assert served == ready(first, "steady")                       # round robin over both
    assert "controller" in second.state() and second.state()["targets"] == first.state()["targets"]
    r = httpx.post(f"{second.url}/internal/sync", json={}, headers=second.auth, timeout=10)
    assert r.status_code == 404                                   # it runs no controller itself


def test_a_request_held_at_the_second_gateway_starts_the_model(pair):
    first, second = pair
    assert not ready(first, "lazy")
    r = complete(second, "lazy")                                  # held there; the controller is woken
    assert r.headers["x-infercloud-replica"] in ready(first, "lazy")
    assert first.state()["targets"]["lazy"] == 1


def test_a_killed_replica_is_routed_around_and_replaced(pair):
    first, second = pair
    victim = next(r for r in first.state()["replicas"] if r["model"] == "steady" and r["state"] == "ready")
    os.kill(victim["pid"], signal.SIGKILL)
    for _ in range(6):
        assert complete(second, "steady").headers["x-infercloud-replica"] != victim["replica_id"]
    wait_for(lambda: len(ready(first, "steady")) == 2 and victim["replica_id"] not in ready(first, "steady"),
             "the controller to replace the killed replica")
    wait_for(lambda: ready(second, "steady") == ready(first, "steady"), "the second gateway to see the new one")
    assert {complete(second, "steady").headers["x-infercloud-replica"] for _ in range(12)} == ready(first, "steady")
