"""Database fixtures shared by tests/tenancy and tests/metering: each test on SQLite and on PostgreSQL."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from infercloud.store.database import open_database
from infercloud.store.schema import metadata

POSTGRES_ENV = "INFERCLOUD_TEST_POSTGRES_URL"


def _drop_all(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        metadata.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A URL of an empty database: a SQLite file under tmp_path, or $INFERCLOUD_TEST_POSTGRES_URL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/t.db"
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url and os.environ.get("INFERCLOUD_REQUIRE_POSTGRES"):  # CI sets it: there, no silent skip
        pytest.fail(f"INFERCLOUD_REQUIRE_POSTGRES is set but {POSTGRES_ENV} is not")
    if not url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. the URL printed by .ci/postgres.sh)")
    _drop_all(url)  # a run that died half-way may have left tables behind
    yield url
    _drop_all(url)


@pytest.fixture
def engine(database_url):
    """An engine on the test database with the schema created; disposed before the tables are dropped."""
    engine = open_database(database_url)
    yield engine
    engine.dispose()
