"""No usage row lost: requests served during a database outage are billed once, after SIGTERM and a restart.

A real gateway with tenancy (one SmolLM2 replica) serves N requests while its database is out: a SQLite file
held under an EXCLUSIVE lock by another connection (every write waits, then fails as locked), or the
PostgreSQL database named by INFERCLOUD_TEST_POSTGRES_URL refusing connections (ALLOW_CONNECTIONS false,
its sessions ended). The gateway gets SIGTERM and exits 0 with the rows spilled under its INFERCLOUD_HOME;
the database comes back; a second gateway on the same database and home replays them at start.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import sqlalchemy as sa

from infercloud.metering.spill import read_spill, spill_dir_for, spill_files
from infercloud.store.schema import metadata
from tests.e2e.conftest import wait_for
from tests.worker.conftest import start_server

N = 6
ENGINE = {"kv_cache_memory_gb": 0.1}
PRICE = {"input_per_mtok": 100.0, "output_per_mtok": 400.0}


@pytest.fixture
def database(tmp_path) -> Iterator[tuple[str, sa.Engine]]:
    url = os.environ.get("INFERCLOUD_TEST_POSTGRES_URL") or f"sqlite:///{tmp_path}/ledger.db"
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    yield url, engine
    engine.dispose()
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The gateways' INFERCLOUD_HOME (their spills); start_server passes the environment on."""
    path = tmp_path / "home"
    monkeypatch.setenv("INFERCLOUD_HOME", str(path))
    return path


@contextmanager
def outage(url: str) -> Iterator[None]:
    """The database cannot be written until the block ends."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        locker = sqlite3.connect(parsed.database, isolation_level=None, timeout=60)
        locker.execute("BEGIN EXCLUSIVE")  # WAL: readers go on, every writer waits 10 s and fails as locked
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = parsed.database
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            try:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
                yield
            finally:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    finally:
        admin.dispose()


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "infercloud", *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def chat(gateway, key: str, request_id: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {key}", "X-Request-Id": request_id},
                      json={"model": "smol", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4})


def ledger_request_ids(engine: sa.Engine, prefix: str) -> Counter:
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT request_id FROM usage WHERE request_id LIKE :p"), {"p": f"{prefix}%"})
        return Counter(found.scalars())


def test_rows_of_an_outage_survive_sigterm_and_are_written_once_after_a_restart(tmp_path, database, home,
                                                                                  smollm2_dir):
    url, engine = database
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 3600, "ledger_flush_s": 0.01,
                    "tenants": [{"name": "ops", "tier": "interactive"}]},
        "models": [{"name": "smol", "path": str(smollm2_dir), "replicas": 1, "engine": ENGINE, "price": PRICE}],
    }
    run = uuid.uuid4().hex[:8]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = start_server(tmp_path / "first", config, startup_timeout_s=300)
    try:
        key = cli("keys", "create", "--tenant", "ops", "--database", url)
        assert chat(first, key, f"warm-{run}").status_code == 200  # the key is cached: no database needed
        wait_for(lambda: ledger_request_ids(engine, f"warm-{run}"), "the warm-up row", 30)
        engine.dispose()  # (PostgreSQL: the outage ends this test's sessions too)
        request_ids = [f"outage-{run}-{i}" for i in range(N)]
        with outage(url):
            for request_id in request_ids:
                served = chat(first, key, request_id)
                assert served.status_code == 200, served.text
            assert first.stop() == 0, first.log()  # SIGTERM during the outage
    finally:
        first.stop()
    spilled = [row["request_id"] for spill in spill_files(spill_dir_for(sa.make_url(url), home))
               for row in read_spill(spill)]
    assert sorted(spilled) == request_ids, f"{len(spilled)} of {N} rows spilled; the gateway's log:\n{first.log()}"
    assert ledger_request_ids(engine, f"outage-{run}") == Counter()  # the first gateway wrote none of them

    second = start_server(tmp_path / "second", config, startup_timeout_s=300)  # the database is back
    try:
        billed = ledger_request_ids(engine, f"outage-{run}")
        assert billed == Counter({request_id: 1 for request_id in request_ids}), (
            f"{sum(billed.values())} rows for {N} requests served during the outage")
        assert spill_files(spill_dir_for(sa.make_url(url), home)) == []
        assert ledger_request_ids(engine, f"warm-{run}") == Counter({f"warm-{run}": 1})
    finally:
        assert second.stop() == 0, second.log()
