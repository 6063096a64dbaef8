"""Fixtures for the cloud: a standalone worker to act as an external replica, and a gateway with workers."""

from __future__ import annotations

import time

import httpx
import pytest

from infercloud.cluster.local import free_port
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
ENGINE = {"kv_cache_memory_gb": 0.1}


@pytest.fixture(scope="module", params=["local", "ray"])
def cluster_backend(request) -> dict:
    """The `cluster` section's backend: workers as local subprocesses, or as Ray actors on the 2-node
    test cluster (infercloud/cluster/ray_local.py). Control-plane e2e modules run once with each."""
    if request.param == "ray":
        return {"backend": "ray", "address": request.getfixturevalue("ray_cluster").address}
    return {"backend": "local"}


@pytest.fixture(scope="module")
def external_worker(tmp_path_factory, smollm2_dir, cluster_backend):
    """A plain infercloud worker serving SmolLM2 as `ext-smol`: an OpenAI-compatible server of its own
    (one per backend's run of the module: a test stops it)."""
    proc = start_server(tmp_path_factory.mktemp("external"),
                        {"models": [{"name": "ext-smol", "path": SMOL, "engine": ENGINE}]})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, external_worker, cluster_backend):
    """Gateway + controller + 3 round_robin and 3 prefix_aware SmolLM2 workers, an external replica, and a
    model whose only replica is a dead URL."""
    config = {
        "cluster": {**cluster_backend, "threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "probe_timeout_s": 2.0, "unhealthy_after": 2},
        "gateway": {"max_attempts": 3, "retry_backoff_s": 0.05},
        "drain_timeout_s": 30,
        "models": [
            {"name": SMOL, "replicas": 3, "routing": "round_robin", "engine": ENGINE},
            {"name": "smol-prefix", "path": SMOL, "replicas": 3, "routing": "prefix_aware", "engine": ENGINE},
            {"name": "ext-smol", "replicas": 0, "routing": "least_load", "external": [external_worker.url]},
            {"name": "ghost", "replicas": 0, "external": [f"http://127.0.0.1:{free_port()}"]},
        ],
    }
    gateway = start_server(tmp_path_factory.mktemp("cloud"), config, startup_timeout_s=300)
    wait_for(lambda: ready_replicas(gateway, "ext-smol") == 1, "the external replica to be ready")
    yield gateway
    assert gateway.stop() == 0, gateway.log()


def replicas(gateway, model: str) -> list[dict]:
    return [r for r in gateway.state()["replicas"] if r["model"] == model]


def ready_replicas(gateway, model: str) -> int:
    return sum(r["state"] == "ready" for r in replicas(gateway, model))


def wait_for(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
