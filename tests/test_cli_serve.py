"""`infercloud serve NAME_OR_PATH` (one model, no config) and the port check `serve` makes before anything starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from infercloud.cli import _model_to_serve, check_port_free, main
from infercloud.models.catalog import ModelNotFoundError
from infercloud.models.marker import PullMarker, PullSource, write_marker
from tests.worker.conftest import ServerProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = "smollm2-135m-instruct"


def serve(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`infercloud serve ARGS` to its end (only for runs that must fail before serving)."""
    env = {**os.environ, **({"INFERCLOUD_HOME": str(home)} if home is not None else {})}
    return subprocess.run([sys.executable, "-m", "infercloud", "serve", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another server is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def model_folder(path: Path, config: dict) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


# --- the model of `serve NAME_OR_PATH` -------------------------------------------------------------------------

def test_a_catalog_name_is_served_as_the_catalog_says() -> None:
    assert _model_to_serve(SMOLLM2) == {"name": SMOLLM2, "kind": "chat"}     # pulled at start if need be
    assert _model_to_serve("all-minilm-l6-v2") == {"name": "all-minilm-l6-v2", "kind": "embedding"}


def test_a_folder_is_served_under_its_name_as_its_config_says(tmp_path: Path) -> None:
    bert = model_folder(tmp_path / "my-bert", {"model_type": "bert", "architectures": ["BertModel"]})
    llama = model_folder(tmp_path / "my-llama", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    assert _model_to_serve(str(bert)) == {"name": "my-bert", "kind": "embedding", "path": str(bert)}
    assert _model_to_serve(str(llama)) == {"name": "my-llama", "kind": "chat", "path": str(llama)}


def test_a_pulled_folder_is_served_as_its_marker_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERCLOUD_HOME", str(tmp_path))
    folder = model_folder(tmp_path / "models" / "my-embedder", {"model_type": "llama"})
    write_marker(folder, PullMarker("my-embedder", "embedding", "hf", PullSource("p", "1", "w", "0", "m"), "now"))
    assert _model_to_serve("my-embedder") == {"name": "my-embedder", "kind": "embedding", "path": str(folder)}


def test_an_unknown_model_is_one_line_naming_the_catalog(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ModelNotFoundError, match="known models: smollm2-135m-instruct"):
        _model_to_serve("no-such-model")
    assert main(["serve", str(tmp_path / "nowhere"), "--port", str(free_port())]) == 1
    assert capsys.readouterr().err == f"infercloud: error: no model folder at {tmp_path / 'nowhere'}\n"


def test_a_model_and_a_config_together_is_an_error_naming_both(capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", SMOLLM2, "--config", "examples/serve.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("infercloud: error: serve: ") and err.count("\n") == 1
    assert SMOLLM2 in err and "--config (examples/serve.yaml)" in err


# --- the port check -----------------------------------------------------------------------------------------------

def test_a_free_port_passes_and_a_taken_one_is_named(taken_port: int) -> None:
    check_port_free("127.0.0.1", free_port())
    with pytest.raises(OSError, match=f"^port {taken_port} on 127.0.0.1 is in use"):
        check_port_free("127.0.0.1", taken_port)


def assert_refused_before_starting(result: subprocess.CompletedProcess[str], port: int, home: Path) -> None:
    """Exit 1 with one line naming the port, and nothing started: no token line, no model, no worker folder."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"infercloud: error: port {port} on 127.0.0.1 is in use")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""               # `serve` says "internal plane: ..." first thing once the port is free
    assert not (home / "run").exists()       # where a cloud's local backend puts its workers' folders


def test_serve_on_a_taken_port_exits_before_loading(tmp_path: Path, taken_port: int) -> None:
    assert_refused_before_starting(serve("--port", str(taken_port), home=tmp_path), taken_port, tmp_path)
    assert_refused_before_starting(serve(SMOLLM2, "--port", str(taken_port), home=tmp_path), taken_port, tmp_path)
    assert not (tmp_path / "models").exists()    # the default models were not pulled into the empty home


def test_a_cloud_on_a_taken_port_exits_before_starting_workers(tmp_path: Path, taken_port: int) -> None:
    config = {"port": taken_port, "cluster": {"threads_per_worker": 1},
              "tenancy": {"database": f"sqlite:///{tmp_path / 'tenancy.db'}", "tenants": [{"name": "ops"}]},
              "models": [{"name": SMOLLM2}]}
    (tmp_path / "tenancy.yaml").write_text(yaml.safe_dump(config))
    result = serve("--config", str(tmp_path / "tenancy.yaml"), home=tmp_path)
    assert_refused_before_starting(result, taken_port, tmp_path)
    assert not (tmp_path / "tenancy.db").exists()


# --- a real server ------------------------------------------------------------------------------------------------

def test_serve_a_catalog_model_by_name(tmp_path: Path, smollm2_dir: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "infercloud", "serve", SMOLLM2, "--port", str(port)],
                            cwd=REPO_ROOT, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env={**os.environ})
    server = ServerProcess(proc, port, log_path)
    try:
        wait_healthy(server)
        models = httpx.get(f"{server.url}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == [SMOLLM2]
        reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
            "model": SMOLLM2, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}).json()
        assert reply["usage"]["completion_tokens"] <= 4 and reply["choices"][0]["message"]["content"]
    finally:
        assert server.stop() == 0, server.log()


def wait_healthy(server: ServerProcess, attempts: int = 600) -> None:
    """Poll /health until it answers 200 (or the process dies); `attempts` polls 0.3 s apart at most."""
    for _ in range(attempts):
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")
