"""Fixtures: `database_url` and `engine`, parametrized over SQLite and PostgreSQL; a home of each test's own."""

import pytest

from tests.tenancy.db_fixture import database_url, engine  # noqa: F401


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """INFERCLOUD_HOME under tmp_path: a ledger's spills never reach the real home or another test."""
    path = tmp_path / "home"
    monkeypatch.setenv("INFERCLOUD_HOME", str(path))
    return path
