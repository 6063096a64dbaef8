"""Bench fixtures: one real `infercloud serve` with SmolLM2 on 127.0.0.1, shared by the end-to-end bench tests."""

from __future__ import annotations

import pytest

from tests.worker.conftest import ServerProcess, start_server

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory, smollm2_dir) -> ServerProcess:
    """SmolLM2 only, with a small KV cache; stopped (and its exit status checked) at the end of the session."""
    server = start_server(tmp_path_factory.mktemp("bench-server"),
                          {"models": [{"name": MODEL, "engine": {"kv_cache_memory_gb": 0.1}}]})
    yield server
    assert server.stop() == 0, server.log()
