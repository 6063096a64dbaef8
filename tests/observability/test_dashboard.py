"""The dashboard (/dashboard) in a real headless Chromium (Debian's `chromium`, driven by Playwright): on a
gateway with tenancy and on a single box, the page loads without console errors, shows the models, and its
numbers change after traffic. /dashboard/data asks for what /metrics asks for.

INFERCLOUD_DASHBOARD_SCREENSHOT=path saves the gateway's page there (docs/images/dashboard.png)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from infercloud.observability.dashboard import GatewayBoard, error_fields, is_page, percentiles
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
CHAT = {"messages": [{"role": "user", "content": "Name three colors."}], "max_tokens": 8}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root on a machine with no network: no sandbox, and none of Chromium's own background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


# -- pure parts -------------------------------------------------------------------------------------
def test_only_the_page_and_its_files_are_public():
    assert is_page("/dashboard") and is_page("/dashboard/static/dashboard.js")
    assert not is_page("/dashboard/data")
    assert not is_page("/dashboard/static/../../internal/state") and not is_page("/dashboard/static/other.js")


def test_percentiles_per_bucket_with_gaps():
    samples = [(100.0 - 5, 1.0), (100.0 - 4, 3.0), (100.0 - 3, 2.0), (100.0 - 40, 9.0), (100.0 - 700, 50.0)]
    t, p50, p90 = percentiles(samples, 100.0, window_s=60.0, bucket_s=15.0)
    assert t == [55.0, 70.0, 85.0, 100.0]
    assert p50 == [None, 9.0, None, 2.0] and p90 == [None, 9.0, None, 3.0]   # the 700 s old sample is out


def test_errors_are_kept_newest_last_and_bounded():
    class Config:
        models = ()

    board = GatewayBoard(type("G", (), {"config": Config()})(), clock=lambda: 1.0)
    for status in (200, 404, 200) + (500,) * 60:
        board.request_done("m", "/v1/chat/completions", status, None)
    assert board.requests["m"] == 63 and board.failed["m"] == 61
    assert len(board.errors) == 50 and board.errors[-1]["status"] == 500


def test_an_error_row_has_the_error_code_of_an_api_error_or_a_json_error_body():
    from starlette.responses import JSONResponse, StreamingResponse

    from infercloud.openai.errors import APIError, model_not_found

    assert error_fields(model_not_found("nope"))["code"] == "model_not_found"
    upstream = APIError(400, "x" * 500, param="max_tokens", code="context_length_exceeded").response()
    fields = error_fields(upstream)                   # a worker's answer, passed on as a response
    assert fields["code"] == "context_length_exceeded" and fields["type"] == "invalid_request_error"
    assert len(fields["message"]) == 200
    assert error_fields(JSONResponse({"id": "x"}, status_code=500)) == {}
    assert error_fields(StreamingResponse(iter(()))) == {} and error_fields(None) == {}


def test_timeline_shows_what_the_controller_changed():
    from types import SimpleNamespace as NS

    replicas = {"m-0": "ready"}
    targets = {"m": 1}
    changes = [{"time": 1.0, "model": "m", "before": 2, "after": 1, "reason": "fewer wanted for 60 s"}]
    fleet = NS(all=lambda: [NS(record=lambda rid=rid, st=st: NS(replica_id=rid, model="m", state=st))
                            for rid, st in replicas.items()])
    gateway = NS(config=NS(models=()), fleet=fleet,
                 control_state=lambda: {"targets": dict(targets), "changes": list(changes)})
    board = GatewayBoard(gateway, clock=lambda: 5.0)
    board.sample()        # the first look: the controller's earlier change (its own time), then where things stand
    targets["m"], replicas["m-1"] = 2, "starting"
    changes.append({"time": 4.5, "model": "m", "before": 1, "after": 2, "reason": "TTFT p90 0.9 s over 0.5 s"})
    board.sample()
    replicas["m-1"] = "ready"
    del replicas["m-0"]
    board.sample()
    board.sample()                                   # nothing changed: nothing added
    assert [(e["time"], e["text"], e.get("reason")) for e in board.events] == [
        (1.0, "target 2 \u2192 1 replicas", "fewer wanted for 60 s"), (5.0, "target 1 replicas", None),
        (5.0, "m-0 ready", None), (4.5, "target 1 \u2192 2 replicas", "TTFT p90 0.9 s over 0.5 s"),
        (5.0, "m-1 added (starting)", None), (5.0, "m-1 starting \u2192 ready", None), (5.0, "m-0 removed", None)]


# -- a real gateway and a real browser ---------------------------------------------------------------
@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm2_dir):
    url = f"sqlite:///{tmp_path_factory.mktemp('db')}/ledger.db"
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "tenants": [{"name": "ops"}, {"name": "acme"}]},
        "models": [{"name": "smol", "path": SMOL, "replicas": 1, "engine": {"kv_cache_memory_gb": 0.1},
                    "slo": {"ttft_s": 2.0, "tpot_s": 0.25},
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
                   # scales to zero after 2 idle seconds: a change of the autoscaler's, with its reason
                   {"name": "idle", "path": SMOL, "replicas": 1, "engine": {"kv_cache_memory_gb": 0.05},
                    "autoscaling": {"min_replicas": 0, "max_replicas": 1, "idle_to_zero_s": 2}}],
    }
    server = start_server(tmp_path_factory.mktemp("dashboard"), config, startup_timeout_s=300)

    def key(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "infercloud", "keys", "create", *args, "--database", url],
                              capture_output=True, text=True, timeout=60, env={**os.environ})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    server.admin_key, server.tenant_key = key("--tenant", "ops", "--admin"), key("--tenant", "acme")
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():   # CI installs it and sets INFERCLOUD_REQUIRE_CHROMIUM: there it must run
        if os.environ.get("INFERCLOUD_REQUIRE_CHROMIUM"):
            pytest.fail("INFERCLOUD_REQUIRE_CHROMIUM is set but Debian's chromium is not installed")
        pytest.skip("Debian's chromium is not installed (.ci/apt-install.sh chromium)")
    from playwright import sync_api   # in the dev extras: make test installs it
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    """A page at `url`, and the console errors and uncaught exceptions it has (a list that fills as it runs)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    return page, errors


def number(page, selector: str) -> int:
    return int(page.inner_text(selector).replace(",", "").strip())


def wait_until(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def chat(gw, key: str, model: str = "smol", stream: bool = True) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", json={"model": model, **CHAT, "stream": stream},
                      headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_data_asks_for_what_metrics_asks_for(gw, internal_token):
    page = httpx.get(f"{gw.url}/dashboard", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{gw.url}/dashboard/static/uPlot.iife.min.js", timeout=10).status_code == 200
    assert httpx.get(f"{gw.url}/dashboard/static/nothing.js", timeout=10).status_code == 401   # not public

    data = f"{gw.url}/dashboard/data"
    assert httpx.get(data, timeout=10).status_code == 401
    refused = httpx.get(data, headers={"Authorization": f"Bearer {gw.tenant_key}"}, timeout=10)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_key_required"
    for key in (gw.admin_key, internal_token):
        answer = httpx.get(data, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert [m["name"] for m in body["models"]] == ["smol", "idle"]
        assert body["models"][0]["slo"] == {"ttft_s": 2.0, "tpot_s": 0.25}
        assert [r["state"] for r in body["replicas"] if r["model"] == "smol"] == ["ready"] and body["tenancy"] is True


def test_gateway_page_is_live(gw, browser, internal_token):
    page, errors = open_page(browser, f"{gw.url}/dashboard#key={internal_token}")
    page.wait_for_selector("#total-requests", timeout=15000)
    assert "key=" not in page.url                             # the key leaves the address bar
    assert page.inner_text("#models tr[data-model='smol'] td:first-child") == "smol"
    assert "ready" in page.inner_text("#replicas")
    before = number(page, "#total-requests")
    errors_before = number(page, "#total-errors")

    for _ in range(3):
        assert chat(gw, gw.tenant_key).status_code == 200
    assert chat(gw, gw.tenant_key, model=f"no-such-{uuid.uuid4().hex[:6]}", stream=False).status_code == 404

    wait_until(lambda: number(page, "#total-requests") >= before + 4, "the request count to go up")
    wait_until(lambda: number(page, "#total-errors") >= errors_before + 1, "the error count to go up")
    assert number(page, ".model-requests[data-model='smol']") >= 3
    wait_until(lambda: "acme" in page.inner_text("#tenants"), "acme's usage today")
    errors_shown = page.inner_text("#errors")
    assert "404" in errors_shown and "model_not_found" in errors_shown
    models_shown = page.locator("#errors td:nth-child(4)").all_inner_texts()
    assert "other" in models_shown and not any("no-such-" in m for m in models_shown)   # configured names only
    # the autoscaler took the idle model to zero; the timeline says so, with the autoscaler's reason
    wait_until(lambda: "target 1 \u2192 0 replicas" in page.inner_text("#timeline"), "the idle model's scale to zero")
    assert "no request for 2 s" in page.inner_text("#timeline")
    assert page.locator("#latency .chart[data-model='smol'] canvas").count() == 2   # TTFT and TPOT plots
    title = "#latency .chart[data-model='smol'][data-metric='ttft'] h3"
    wait_until(lambda: "streams" in page.inner_text(title) and "(0 streams)" not in page.inner_text(title),
               "the streams to be plotted")

    shot = os.environ.get("INFERCLOUD_DASHBOARD_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shot, full_page=True)
    assert not errors, errors


def test_a_refused_key_asks_for_another(gw, browser):
    page, errors = open_page(browser, f"{gw.url}/dashboard#key={gw.tenant_key}")
    page.wait_for_selector("#login:not([hidden])", timeout=15000)
    assert "403" in page.inner_text("#login-reason")
    page.fill("#key", gw.admin_key)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#total-requests", timeout=15000)
    assert page.inner_text("#models tr[data-model='smol'] td:first-child") == "smol"
    assert [e for e in errors if "403" not in e] == []        # only the refused fetch itself is logged


def test_single_box_page_is_live(tmp_path, smollm2_dir, browser, internal_token):
    box = start_server(tmp_path, {"models": [{"name": SMOL, "kind": "chat", "engine": {"kv_cache_memory_gb": 0.1}}]})
    try:
        assert httpx.get(f"{box.url}/dashboard/data", timeout=10).status_code == 401   # the internal token only
        page, errors = open_page(browser, f"{box.url}/dashboard#key={internal_token}")
        page.wait_for_selector("#total-tokens", timeout=15000)
        assert page.inner_text(f"#models tr[data-model='{SMOL}'] td:first-child") == SMOL
        before = number(page, "#total-tokens")
        r = httpx.post(f"{box.url}/v1/chat/completions", json={"model": SMOL, **CHAT}, timeout=120)
        assert r.status_code == 200, r.text
        wait_until(lambda: number(page, "#total-tokens") > before, "the tokens generated to go up")
        # the engine's TTFT and TPOT of the box's requests, plotted as on the gateway
        assert page.locator(f"#latency .chart[data-model='{SMOL}'] canvas").count() == 2
        wait_until(lambda: "(1 requests)" in page.inner_text("#latency"), "the request to be plotted")
        assert not errors, errors
    finally:
        assert box.stop() == 0, box.log()
