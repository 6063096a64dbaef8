"""Fixtures: `database_url` and `engine` (SQLite, and PostgreSQL where INFERCLOUD_TEST_POSTGRES_URL is set)."""

from tests.tenancy.db_fixture import database_url, engine  # noqa: F401
