"""Opening the database: an engine for any SQLAlchemy URL, with the schema (store/schema.py) created and brought
up to date.

The default is a SQLite file under the infercloud home. SQLite runs in WAL mode with `synchronous=NORMAL`
(a commit is durable once the WAL is synced at checkpoint; readers never block the writer), and every
connection waits up to 10 s for a lock instead of failing at once, so the CLI and a running gateway can
share the file. Times are naive UTC datetimes (`utcnow`), the same on every backend.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from infercloud.paths import infercloud_home
from infercloud.store.schema import metadata


def default_database_url() -> str:
    """The SQLite file under the infercloud home."""
    return f"sqlite:///{infercloud_home() / 'infercloud.db'}"


def utcnow() -> dt.datetime:
    """Now, as the naive UTC datetime every stored time is."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def open_database(url: str | None = None) -> sa.Engine:
    """An engine for `url` (default: the SQLite file), with the schema created if missing."""
    url = url or default_database_url()
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 10.0})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    _add_new_columns(engine)
    _add_new_indexes(engine)
    return engine


def _add_new_columns(engine: sa.Engine) -> None:
    """Columns added to the schema since a database was made (all nullable) are added to it."""
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _add_new_indexes(engine: sa.Engine) -> None:
    """Indexes added to the schema since a database was made are created on it (create_all skips the
    indexes of a table that exists)."""
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
