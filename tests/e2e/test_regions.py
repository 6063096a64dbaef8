"""Regions end to end on a 2-node Ray cluster (infercloud/cluster/ray_local.py): node 127.0.0.2 is region-a, node
127.0.0.3 is region-b.

One SmolLM2 replica per region. Tenants: `roamer` (home region-b, may be served anywhere) and
`resident` (bound to region-a: data residency). Replicas are not restarted here (controller.restart:
false), so a killed replica stays down; tests/e2e/test_ray_nodes.py covers re-placement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from urllib.parse import urlparse

import httpx
import pytest

from tests.e2e.conftest import replicas, wait_for
from infercloud.cluster.ray_local import node_ip
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
REGION_A, REGION_B = "region-a", "region-b"      # the ray_cluster fixture's nodes 0 and 1


@pytest.fixture(scope="module")
def geo(tmp_path_factory, ray_cluster, smollm2_dir):
    database = f"sqlite:///{tmp_path_factory.mktemp('geo-db')}/tenancy.db"
    config = {
        "cluster": {"backend": "ray", "address": ray_cluster.address, "threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2, "restart": False},
        "gateway": {"spillover_outstanding": 1},
        "regions": [{"name": REGION_A, "latency_ms": {REGION_B: 30}}, {"name": REGION_B}],
        "tenancy": {"database": database, "tenants": [
            {"name": "ops", "tier": "interactive"},
            {"name": "plain"},
            {"name": "roamer", "home_region": REGION_B},
            {"name": "resident", "regions": [REGION_A]}]},
        "models": [{"name": "smol", "path": SMOL, "regions": {REGION_A: 1, REGION_B: 1},
                    "engine": {"kv_cache_memory_gb": 0.1}}],
    }
    server = start_server(tmp_path_factory.mktemp("geo"), config, startup_timeout_s=300)
    server.keys = {name: _key(name, database) for name in ("roamer", "resident", "plain")}
    server.config = config
    server.admin_key = _key("ops", database, "--admin")
    yield server
    assert server.stop() == 0, server.log()


def _key(tenant: str, database: str, *flags: str) -> str:
    done = subprocess.run([sys.executable, "-m", "infercloud", "keys", "create", "--tenant", tenant, "--database",
                           database, *flags], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def complete(gw, tenant: str, region: str | None = None, **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.keys[tenant]}"}
    if region is not None:
        headers["x-infercloud-region"] = region
    return httpx.post(f"{gw.url}/v1/completions", headers=headers, timeout=120,
                      json={"model": "smol", "prompt": "Hello", "max_tokens": 4, **body})


def served_in(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-infercloud-region"]


def test_replicas_are_placed_one_per_region_on_its_nodes(geo):
    placed = {r["region"]: urlparse(r["url"]).hostname for r in replicas(geo, "smol")}
    assert placed == {REGION_A: node_ip(0), REGION_B: node_ip(1)}
    assert {r["wanted_region"] for r in replicas(geo, "smol")} == {REGION_A, REGION_B}


def test_a_request_is_served_in_its_region(geo):
    assert [served_in(complete(geo, "roamer", REGION_A)) for _ in range(3)] == [REGION_A] * 3
    assert [served_in(complete(geo, "roamer", REGION_B)) for _ in range(3)] == [REGION_B] * 3
    assert served_in(complete(geo, "roamer")) == REGION_B          # no header: the tenant's home region
    assert served_in(complete(geo, "resident")) == REGION_A        # bound: its own region


def test_a_full_region_spills_to_the_nearest_unless_residency_forbids(geo):
    started = threading.Event()
    done: list[str] = []

    def long_stream():
        body = {"model": "smol", "prompt": "Once", "max_tokens": 150, "ignore_eos": True, "stream": True}
        headers = {"Authorization": f"Bearer {geo.keys['roamer']}", "x-infercloud-region": REGION_A}
        with httpx.stream("POST", f"{geo.url}/v1/completions", json=body, headers=headers, timeout=120) as r:
            done.append(r.headers["x-infercloud-region"])
            for line in r.iter_lines():
                started.set()
                if line == "data: [DONE]":
                    done.append(line)

    thread = threading.Thread(target=long_stream)
    thread.start()
    assert started.wait(60)
    assert served_in(complete(geo, "roamer", REGION_A)) == REGION_B    # region-a's replica is full (1)
    assert served_in(complete(geo, "resident")) == REGION_A            # ...but this one may not leave it
    thread.join(120)
    assert done == [REGION_A, "data: [DONE]"]


def test_a_gateway_in_region_b_sharing_the_controller_serves_its_requests_in_b(geo, tmp_path):
    """A second gateway (gateway.region: region-b) links to the first one's controller: requests that
    name no region and whose tenant has no home region are served where that gateway is."""
    config = {**geo.config, "gateway": {"controller_url": geo.url, "region": REGION_B}}
    del config["cluster"], config["controller"]
    second = start_server(tmp_path, config)
    try:
        second.keys = geo.keys
        wait_for(lambda: len(replicas(second, "smol")) == 2, "the second gateway to see both replicas")
        assert [served_in(complete(second, "plain")) for _ in range(3)] == [REGION_B] * 3
        assert served_in(complete(second, "plain", REGION_A)) == REGION_A          # the header still wins
        assert served_in(complete(second, "resident")) == REGION_A                 # and residency
    finally:
        assert second.stop() == 0, second.log()


def test_unknown_and_forbidden_regions_are_clear_errors(geo):
    r = complete(geo, "roamer", "mars")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_region"
    assert REGION_A in r.json()["error"]["message"]
    r = complete(geo, "resident", REGION_B)
    assert r.status_code == 403 and r.json()["error"]["code"] == "region_not_allowed"


def test_a_tenant_bound_to_a_region_through_the_admin_api(geo):
    def admin(path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{geo.url}{path}", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {geo.admin_key}"})

    r = admin("/admin/tenants", {"name": "lost", "regions": ["mars"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "regions"
    r = admin("/admin/tenants", {"name": "eu-bank", "regions": [REGION_A]})
    assert r.status_code == 201 and r.json()["regions"] == [REGION_A]
    geo.keys["eu-bank"] = admin("/admin/keys", {"tenant": "eu-bank"}).json()["key"]
    assert served_in(complete(geo, "eu-bank")) == REGION_A
    assert complete(geo, "eu-bank", REGION_B).json()["error"]["code"] == "region_not_allowed"


def test_with_region_a_down_requests_go_to_b_unless_residency_forbids(geo):
    (victim,) = [r for r in replicas(geo, "smol") if r["region"] == REGION_A]
    os.kill(victim["pid"], signal.SIGKILL)
    assert served_in(complete(geo, "roamer", REGION_A)) == REGION_B    # failed over at once
    r = complete(geo, "resident")
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "region_unavailable" and REGION_A in error["message"]
    assert "residency" in error["message"] and r.headers["retry-after"]
    wait_for(lambda: [x["region"] for x in replicas(geo, "smol")] == [REGION_B], "the dead replica to be gone")
    stream = httpx.post(f"{geo.url}/v1/completions", timeout=120, json={
        "model": "smol", "prompt": "Hi", "max_tokens": 4, "stream": True},
        headers={"Authorization": f"Bearer {geo.keys['roamer']}", "x-infercloud-region": REGION_A})
    assert stream.headers["x-infercloud-region"] == REGION_B and stream.text.endswith("data: [DONE]\n\n")
    assert complete(geo, "resident").json()["error"]["code"] == "region_unavailable"
