"""The gateway's /metrics on a real cloud with tenancy: requests per model and tenant (real tenants only,
never a name a client sent), stream TTFT/TPOT and SLO attainment, autoscaler decisions."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import wait_for
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
CHAT = {"messages": [{"role": "user", "content": "Name three colors."}], "max_tokens": 8}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm2_dir):
    url = f"sqlite:///{tmp_path_factory.mktemp('db')}/ledger.db"
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "tenants": [{"name": "ops"}]},
        "models": [{"name": "smol", "path": SMOL, "replicas": 1, "engine": {"kv_cache_memory_gb": 0.1},
                    "slo": {"ttft_s": 60.0, "tpot_s": 10.0},
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}}],
    }
    server = start_server(tmp_path_factory.mktemp("gateway-metrics"), config, startup_timeout_s=300)
    done = subprocess.run([sys.executable, "-m", "infercloud", "keys", "create", "--tenant", "ops", "--admin",
                           "--database", url], capture_output=True, text=True, timeout=60, env={**os.environ})
    assert done.returncode == 0, done.stderr
    server.admin_key = done.stdout.strip()
    yield server
    assert server.stop() == 0, server.log()


def new_tenant(gw) -> tuple[str, str]:
    """(name, key) of a new tenant made through the admin API."""
    name, admin = f"t-{uuid.uuid4().hex[:8]}", {"Authorization": f"Bearer {gw.admin_key}"}
    assert httpx.post(f"{gw.url}/admin/tenants", json={"name": name}, headers=admin, timeout=30).status_code == 201
    created = httpx.post(f"{gw.url}/admin/keys", json={"tenant": name}, headers=admin, timeout=30)
    assert created.status_code == 201
    return name, created.json()["key"]


def scrape(gw) -> list:
    text = httpx.get(f"{gw.url}/metrics", headers=gw.auth, timeout=30).text
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def total(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def test_requests_per_tenant_name_real_tenants_only(gw):
    (a, key_a), (b, key_b) = new_tenant(gw), new_tenant(gw)
    stream = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "smol", **CHAT, "stream": True},
                        headers={"Authorization": f"Bearer {key_a}"}, timeout=120)
    assert stream.status_code == 200 and stream.text.rstrip().endswith("data: [DONE]")
    plain = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "smol", **CHAT},
                       headers={"Authorization": f"Bearer {key_b}"}, timeout=120)
    assert plain.status_code == 200, plain.text
    forged = f"sk-ic-{uuid.uuid4().hex}"
    assert httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "smol", **CHAT},
                      headers={"Authorization": f"Bearer {forged}"}, timeout=30).status_code == 401

    samples = scrape(gw)
    requests = "infercloud_gateway_tenant_requests_total"
    assert total(samples, requests, model="smol", tenant=a, status="200") == 1
    assert total(samples, requests, model="smol", tenant=b, status="200") == 1
    assert total(samples, requests, tenant="-", status="401") >= 1
    tenants = {s.labels["tenant"] for s in samples if "tenant" in s.labels}
    assert tenants <= {"ops", a, b, "-"}, tenants              # tenants of the store, or none
    assert not [s for s in samples if any(forged in v for v in s.labels.values())]
    assert total(samples, "infercloud_gateway_tenant_response_start_seconds_count", model="smol", tenant=a) == 1


def test_streams_are_timed_held_to_the_slo_and_decisions_counted(gw):
    _, key = new_tenant(gw)
    before = scrape(gw)
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "smol", **CHAT, "stream": True},
                   headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert r.status_code == 200
    after = scrape(gw)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("infercloud_gateway_ttft_seconds_count", model="smol") == 1
    assert delta("infercloud_gateway_tpot_seconds_count", model="smol") == 1
    assert delta("infercloud_gateway_slo_total", model="smol", metric="ttft", result="met") == 1
    assert delta("infercloud_gateway_slo_total", model="smol", metric="tpot", result="met") == 1
    wait_for(lambda: total(scrape(gw), "infercloud_autoscaler_decisions_total", model="smol", action="hold") > 0,
             "an autoscaler decision to be counted", 30)
    assert total(scrape(gw), "infercloud_autoscaler_target_replicas", model="smol") == 1
