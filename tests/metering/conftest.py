"""Fixtures: `database_url` and `engine`, parametrized over SQLite and PostgreSQL."""

from tests.tenancy.db_fixture import database_url, engine  # noqa: F401
