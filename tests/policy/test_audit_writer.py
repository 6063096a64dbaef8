"""AuditWriter on real SQL: rows recorded at once, written in batches; a failed write kept and tried again; a
full buffer drops its oldest rows and says so; close writes the rest. And admin_change leaves secrets out."""

# ruff: noqa: F811  (pytest fixtures as parameters shadow the imported `engine` fixture)
from __future__ import annotations

import asyncio
import datetime as dt
import logging

import pytest
import sqlalchemy as sa

from infercloud.config import TenantSpec
from infercloud.policy.audit import AuditLog, AuditRow, AuditWriter, admin_change
from infercloud.store.schema import audit
from infercloud.tenancy.admission import Principal
from infercloud.tenancy.store import TenantStore
from tests.tenancy.db_fixture import database_url, engine  # noqa: F401
from tests.tenancy.fakes import FakeClock

T0 = dt.datetime(2026, 12, 5, 12, 0)


def _row(n: int, **fields) -> AuditRow:
    fields = {"tenant_id": 1, "request_id": f"req-{n}", "rule": "pii", "mode": "enforce",
              "at": T0 + dt.timedelta(seconds=n), **fields}
    return AuditRow("policy", "refuse", f"row {n}", **fields)


def _whats(engine) -> list[str]:
    """Every row's `what`, in the order written."""
    with engine.connect() as conn:
        return list(conn.execute(sa.select(audit.c.what).order_by(audit.c.id)).scalars())


def _commits(engine) -> list:
    commits: list = []
    sa.event.listen(engine, "commit", lambda conn: commits.append(1))
    return commits


async def _until(condition, what: str) -> None:
    for _ in range(3000):  # generous: a slow machine only makes the loop run longer
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


def test_flush_writes_every_recorded_row_in_one_transaction(engine):
    writer = AuditWriter(AuditLog(engine), flush_s=3600)
    writer.record([_row(1), _row(2)])
    writer.record([_row(3)])
    writer.record([])
    assert writer.num_buffered == 3 and _whats(engine) == []   # record never writes
    commits = _commits(engine)
    assert asyncio.run(writer.flush()) is True
    assert _whats(engine) == ["row 1", "row 2", "row 3"] and len(commits) == 1
    assert (writer.num_buffered, writer.num_written) == (0, 3)
    assert asyncio.run(writer.flush()) is True and len(commits) == 1   # nothing buffered: no transaction


def test_the_writer_task_writes_a_burst_in_one_transaction(engine):
    writer = AuditWriter(AuditLog(engine), flush_s=0.01)
    commits = _commits(engine)

    async def main():
        writer.start()
        writer.record([_row(n) for n in range(5)])   # one burst before the writer wakes
        await _until(lambda: writer.num_written == 5, "the burst to be written")
        writer.record([_row(5)])
        await _until(lambda: writer.num_written == 6, "the next row to be written")
        await writer.close()

    asyncio.run(main())
    assert _whats(engine) == [f"row {n}" for n in range(6)] and len(commits) == 2


def test_a_failed_write_keeps_the_rows_and_a_later_flush_writes_them(engine, caplog):
    writer = AuditWriter(AuditLog(engine), flush_s=3600)
    writer.record([_row(1), _row(2)])
    audit.drop(engine)   # every insert now fails
    with caplog.at_level(logging.ERROR, "infercloud.audit"):
        assert asyncio.run(writer.flush()) is False
    assert writer.num_buffered == 2 and "will retry" in caplog.text
    writer.record([_row(3)])
    audit.create(engine)
    assert asyncio.run(writer.flush()) is True
    assert _whats(engine) == ["row 1", "row 2", "row 3"] and writer.num_buffered == 0


def test_the_writer_task_retries_until_the_table_is_back(engine, caplog):
    writer = AuditWriter(AuditLog(engine), flush_s=0.01)

    async def main():
        audit.drop(engine)
        writer.start()
        writer.record([_row(1)])
        await _until(lambda: "will retry" in caplog.text, "a failed write")
        audit.create(engine)
        await _until(lambda: writer.num_written == 1, "the retry")
        await writer.close()

    with caplog.at_level(logging.ERROR, "infercloud.audit"):
        asyncio.run(main())
    assert _whats(engine) == ["row 1"]


def test_a_row_the_database_refuses_does_not_block_the_others(engine, caplog):
    writer = AuditWriter(AuditLog(engine), flush_s=3600)
    writer.record([_row(1), _row(2, after={"not json": object()}), _row(3)])
    with caplog.at_level(logging.ERROR, "infercloud.audit"):
        assert asyncio.run(writer.flush()) is True
    assert _whats(engine) == ["row 1", "row 3"] and writer.num_buffered == 0
    assert "refused a row" in caplog.text and "row 2" in caplog.text


def test_a_full_buffer_drops_its_oldest_rows_and_warns_now_and_then(engine, caplog):
    clock = FakeClock()
    writer = AuditWriter(AuditLog(engine), flush_s=3600, max_buffered=3, clock=clock)
    with caplog.at_level(logging.WARNING, "infercloud.audit"):
        writer.record([_row(n) for n in range(5)])
        writer.record([_row(5)])                       # dropped too, but warned about a moment ago
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "dropped (2 so far)" in warnings[0].getMessage()
        clock.advance(60)
        writer.record([_row(6)])
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2 and "dropped (4 so far)" in warnings[1].getMessage()
    assert (writer.num_buffered, writer.num_dropped) == (3, 4)
    asyncio.run(writer.flush())
    assert _whats(engine) == ["row 4", "row 5", "row 6"]


def test_rows_kept_by_a_failed_write_are_bounded_too(engine):
    writer = AuditWriter(AuditLog(engine), flush_s=3600, max_buffered=4, clock=FakeClock())
    writer.record([_row(1), _row(2), _row(3)])
    audit.drop(engine)
    assert asyncio.run(writer.flush()) is False
    writer.record([_row(4), _row(5), _row(6)])         # the oldest kept rows make room
    audit.create(engine)
    assert asyncio.run(writer.flush()) is True
    assert _whats(engine) == ["row 3", "row 4", "row 5", "row 6"] and writer.num_dropped == 2


def test_close_writes_the_rest(engine):
    writer = AuditWriter(AuditLog(engine), flush_s=3600)   # the task never flushes on its own in this test

    async def main():
        writer.start()
        writer.record([_row(1), _row(2)])
        await asyncio.sleep(0)
        assert _whats(engine) == []
        await writer.close()

    asyncio.run(main())
    assert _whats(engine) == ["row 1", "row 2"] and writer.num_buffered == 0


def test_close_logs_what_cannot_be_written(engine, caplog):
    writer = AuditWriter(AuditLog(engine), flush_s=3600)
    writer.record([_row(1)])
    audit.drop(engine)
    with caplog.at_level(logging.ERROR, "infercloud.audit"):
        asyncio.run(writer.close())
    assert "1 rows could not be written at shutdown" in caplog.text and "req-1" in caplog.text


def test_query_filters_by_request_id(engine):
    log = AuditLog(engine)
    log.write([_row(1), _row(2), _row(3, request_id=None)])
    (found,) = log.query(request_id="req-2")
    assert (found.what, found.id is not None) == ("row 2", True)
    assert found.describe("acme")["at"] == "2026-12-05T12:00:02Z" and found.describe("acme")["tenant"] == "acme"
    assert log.query(request_id="req-9") == []


def test_admin_change_names_the_key_and_leaves_secrets_out(engine):
    store = TenantStore(engine)
    tenant = store.create_tenant(TenantSpec("acme"))
    key, record = store.create_key("acme", is_admin=True)
    row = admin_change(Principal(tenant, record), "create_key", "create a key", tenant_id=tenant.id,
                       after={**record.describe(), "key": key, "key_hash": "abc"})
    assert (row.kind, row.key_id, row.tenant_id, row.before) == ("admin", record.id, tenant.id, None)
    assert row.after == record.describe()
    by_cli = admin_change(None, "create_tenant", "cli: create tenant acme", after=tenant.describe())
    assert (by_cli.key_id, by_cli.after) == (None, tenant.describe())
