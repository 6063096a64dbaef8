"""Fixtures that run a real `infercloud serve` process on 127.0.0.1 and stop it afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from infercloud.cluster.local import stop_process
from infercloud.internal_token import bearer, client_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        """The header that shows the session's internal token (tests/conftest.py)."""
        return bearer(client_token())

    def state(self) -> dict:
        return httpx.get(f"{self.url}/internal/state", headers=self.auth, timeout=10).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.proc, 60)


def start_server(tmp_path: Path, config: dict, startup_timeout_s: float = 180.0) -> ServerProcess:
    port = free_port()
    config_path = tmp_path / f"serve-{port}.yaml"
    config_path.write_text(yaml.safe_dump({**config, "port": port}))
    log_path = tmp_path / f"serve-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "infercloud", "serve", "--config", str(config_path)],
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT, env={**os.environ})
    server = ServerProcess(proc, port, log_path)
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")


DEFAULT_MODELS = [
    {"name": "smollm2-135m-instruct", "kind": "chat", "engine": {"kv_cache_memory_gb": 0.25}},
    {"name": "all-minilm-l6-v2", "kind": "embedding"},
]


@pytest.fixture(scope="session")
def server(tmp_path_factory, smollm2_dir):
    """The default two models, with a small body limit so the 413 path is cheap to reach."""
    proc = start_server(tmp_path_factory.mktemp("server"), {"models": DEFAULT_MODELS, "max_body_bytes": 262144})
    yield proc
    assert proc.stop() == 0, proc.log()
