"""Redis for the tests of shared rate limits: the server named by $INFERCLOUD_TEST_REDIS_URL, or one of
a test's own (a redis-server subprocess it may stop and start, to stage an outage)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from infercloud.cluster.local import free_port

REDIS_ENV = "INFERCLOUD_TEST_REDIS_URL"


def _missing(what: str) -> None:
    if os.environ.get("INFERCLOUD_REQUIRE_REDIS"):  # CI sets it: there, no silent skip
        pytest.fail(f"INFERCLOUD_REQUIRE_REDIS is set but there is no {what}")
    pytest.skip(f"Redis tests need {what} (.ci/redis.sh installs redis-server, starts one and prints its URL)")


def shared_redis_url() -> str:
    """$INFERCLOUD_TEST_REDIS_URL, or skip (fail under INFERCLOUD_REQUIRE_REDIS)."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        _missing(f"${REDIS_ENV}")
    return url


@pytest.fixture
def redis_url() -> str:
    return shared_redis_url()


class RedisServer:
    """A redis-server subprocess on a fixed loopback port, no persistence; stop() and start() again."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, started."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server on PATH")
    server = RedisServer(binary, tmp_path)
    server.start()
    yield server
    server.stop()
