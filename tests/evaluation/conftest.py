"""Fixtures: `database_url` and `engine`, parametrized over SQLite and PostgreSQL (tests/tenancy/db_fixture.py)."""

from tests.tenancy.db_fixture import database_url, engine  # noqa: F401
