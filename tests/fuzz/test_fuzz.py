"""The public API fuzzed from its published schema: schemathesis against a real server and a real gateway.

Each server's /openapi.json describes its request bodies; schemathesis generates cases from it (its
coverage phase: boundary values and wrong types; its fuzzing phase: random valid and invalid bodies)
and no response may have a status of 500 or above. The chat model is a tiny random-weight Llama with
SmolLM2's tokenizer and chat template (every code path is the real one, generation is quick); the
embedding model is the real MiniLM. The gateway runs with tenancy and is called with an admin key,
so the admin API is fuzzed as well as /v1.

`make test` runs INFERCLOUD_FUZZ_EXAMPLES (default 50) cases per operation and phase with a fixed
seed (at least 1,000 cases over the two servers); `make fuzz` runs many more with a random seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_tenancy import cli
from tests.worker.conftest import start_server

EXAMPLES = int(os.environ.get("INFERCLOUD_FUZZ_EXAMPLES", "50"))
SEED = os.environ.get("INFERCLOUD_FUZZ_SEED", "20261205")   # "random": a new seed each run (printed)
MIN_CASES = max(500, 3 * EXAMPLES)   # per server (3 bodies of EXAMPLES each at least): 1,000 in all by default
EMBED = "all-minilm-l6-v2"


def _models(random_model_dirs) -> list[dict]:
    return [{"name": "fuzz-tiny", "path": str(random_model_dirs[0]),
             "engine": {"max_model_len": 64, "kv_cache_memory_gb": 0.05}},
            {"name": EMBED, "kind": "embedding"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_model_dirs):
    folder = tmp_path_factory.mktemp("fuzz-server")   # stored responses go to its own database, not the home's
    proc = start_server(folder, {"models": _models(random_model_dirs),
                                 "responses": {"database": f"sqlite:///{folder}/responses.db"}})
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, random_model_dirs):
    folder = tmp_path_factory.mktemp("fuzz-gateway")
    database = f"sqlite:///{folder}/ledger.db"
    config = {"cluster": {"threads_per_worker": 1}, "controller": {"probe_interval_s": 0.5},
              "tenancy": {"database": database, "tenants": [{"name": "ops", "tier": "interactive"}]},
              "models": [{**m, "replicas": 1} for m in _models(random_model_dirs)]}
    proc = start_server(folder, config, startup_timeout_s=300)
    proc.admin_key = cli("keys", "create", "--tenant", "ops", "--admin", "--database", database)
    yield proc
    assert proc.stop() == 0, proc.log()


def fuzz(url: str, report: Path, headers: dict[str, str]) -> dict:
    """Run schemathesis against `url`'s schema; its JSON report."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks",
               "not_a_server_error", "--max-examples", str(EXAMPLES), "--workers", "1", "--request-timeout", "120",
               "--generation-database", "none", "--report", "json", "--report-json-path", str(report),
               "--no-color", "--phases", "examples,coverage,fuzzing"]
    if SEED != "random":
        command += ["--seed", SEED]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
           "INFERCLOUD_FUZZ_MODELS": f"chat=fuzz-tiny,embedding={EMBED}"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3000,
                          cwd=Path(__file__).parents[2])
    print(done.stdout[-3000:])
    assert report.is_file(), done.stdout + done.stderr
    return json.loads(report.read_text())


def _check(result: dict) -> None:
    cases = result["test_cases"]["generated"]
    print(f"schemathesis: {cases} cases, {len(result['failures'])} failures, {len(result['errors'])} errors, "
          f"seed {result['seed']}")
    assert not result["failures"], json.dumps(result["failures"], indent=1)[:6000]
    assert not result["errors"], json.dumps(result["errors"], indent=1)[:6000]
    assert cases >= MIN_CASES, cases


def test_no_request_to_the_server_gets_a_5xx(server, tmp_path):
    _check(fuzz(server.url, tmp_path / "server.json", {}))
    assert server.state()["draining"] is False


def test_no_request_to_the_gateway_gets_a_5xx(gateway, tmp_path):
    _check(fuzz(gateway.url, tmp_path / "gateway.json", {"Authorization": f"Bearer {gateway.admin_key}"}))

