"""Fixtures: `database_url` and `engine`, parametrized over SQLite and PostgreSQL; `redis_url`, `own_redis`."""

from tests.tenancy.db_fixture import database_url, engine  # noqa: F401
from tests.tenancy.redis_fixture import own_redis, redis_url  # noqa: F401
