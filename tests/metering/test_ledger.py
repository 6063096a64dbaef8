"""The usage ledger (pricing, group commit, retry, close) and the reports over it, on real SQL."""

from __future__ import annotations

import asyncio
import time
import datetime as dt

import pytest
import sqlalchemy as sa

from infercloud.config import PriceSpec, TenantSpec
from infercloud.metering.events import UsageEvent, billed_cost, device_cost, max_cost
from infercloud.metering.ledger import Ledger
from infercloud.metering.reports import (
    device_utilization,
    parse_time,
    period_start,
    spent_usd,
    usage_report,
)
from infercloud.metering.spill import read_spill, spill_files
from infercloud.store.schema import usage
from infercloud.tenancy.store import TenantStore

PRICE = PriceSpec(input_per_mtok=2.0, cached_input_per_mtok=0.5, output_per_mtok=8.0, device_per_hour=3.6)
DAY1, DAY2 = dt.datetime(2026, 11, 1, 10, 0), dt.datetime(2026, 11, 2, 9, 30)


@pytest.fixture
def tenants(engine) -> tuple[int, int]:
    store = TenantStore(engine)
    return store.create_tenant(TenantSpec("acme")).id, store.create_tenant(TenantSpec("beta")).id


def _event(tenant_id: int, request_id: str = "r1", model: str = "m", **usage_) -> UsageEvent:
    return UsageEvent(request_id, tenant_id, None, model, "/v1/chat/completions", "standard", "completed", 200,
                      **usage_)


def _ledger(engine, flush_s: float = 0.01) -> Ledger:
    return Ledger(engine, {"m": PRICE, "e": PriceSpec(input_per_mtok=0.1, device_per_hour=1.8)}, flush_s)


def _rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(usage).order_by(usage.c.id)).all()


def _commits(engine) -> list:
    commits: list = []
    sa.event.listen(engine, "commit", lambda conn: commits.append(1))
    return commits


async def _until(condition, what: str) -> None:
    for _ in range(1000):  # up to 10 s: generous, a slow machine only makes the loop run longer
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


# -- pricing ---------------------------------------------------------------------------------------
def test_record_prices_the_row_and_tells_listeners(engine, tenants):
    ledger, heard = _ledger(engine), []
    ledger.listeners.append(lambda event, cost: heard.append((event, cost)))
    event = _event(tenants[0], prompt_tokens=1000, cached_tokens=400, completion_tokens=500, device_seconds=10.0)
    row = ledger.record(event)
    assert row["cost_usd"] == pytest.approx((600 * 2.0 + 400 * 0.5 + 500 * 8.0) / 1e6)
    assert row["device_cost_usd"] == pytest.approx(10.0 * 3.6 / 3600)
    assert heard == [(event, row["cost_usd"])] and ledger.num_queued == 1 and _rows(engine) == []
    free = ledger.record(_event(tenants[0], model="unpriced", prompt_tokens=10**6, device_seconds=3600.0))
    assert free["cost_usd"] == 0.0 and free["device_cost_usd"] == 0.0


def test_price_helpers():
    assert billed_cost(_event(1, prompt_tokens=100, cached_tokens=500), PRICE) == pytest.approx(100 * 0.5 / 1e6)
    assert device_cost(_event(1, device_seconds=1800.0), PRICE) == pytest.approx(1.8)
    assert max_cost(1000, 250, PRICE) == pytest.approx((1000 * 2.0 + 250 * 8.0) / 1e6)
    with pytest.raises(ValueError, match="outcome"):
        UsageEvent("r", 1, None, "m", "/v1/x", "standard", "exploded")


# -- writing ---------------------------------------------------------------------------------------
def test_flush_writes_every_queued_row_in_one_transaction(engine, tenants):
    ledger = _ledger(engine)
    for i in range(5):
        ledger.record(_event(tenants[i % 2], f"r{i}", prompt_tokens=i, completion_tokens=1))
    commits = _commits(engine)
    asyncio.run(ledger.flush())
    assert len(commits) == 1 and ledger.num_written == 5 and ledger.num_queued == 0
    rows = _rows(engine)
    assert [(r.request_id, r.prompt_tokens) for r in rows] == [(f"r{i}", i) for i in range(5)]
    assert rows[0].cost_usd == pytest.approx(8.0 / 1e6) and rows[0].outcome == "completed"
    asyncio.run(ledger.flush())  # nothing queued: no transaction
    assert len(commits) == 1


def test_the_writer_task_writes_a_burst_in_one_transaction(engine, tenants):
    ledger = _ledger(engine, flush_s=0.01)
    commits = _commits(engine)

    async def main():
        ledger.start()
        for i in range(3):
            ledger.record(_event(tenants[0], f"r{i}"))
        assert _rows(engine) == []  # the caller never waits for SQL
        await _until(lambda: ledger.num_written == 3, "the writer to write the burst")
        ledger.record(_event(tenants[1], "late"))
        await _until(lambda: ledger.num_written == 4, "the writer to write a later row")
        await ledger.close()

    asyncio.run(main())
    assert [r.request_id for r in _rows(engine)] == ["r0", "r1", "r2", "late"] and len(commits) == 2


def test_a_failed_write_keeps_the_rows_and_a_later_flush_writes_them(engine, tenants):
    ledger = _ledger(engine, flush_s=0.001)
    usage.drop(engine)  # every insert now fails
    ledger.record(_event(tenants[0], "a"))
    ledger.record(_event(tenants[1], "b"))
    asyncio.run(ledger.flush())
    assert (ledger.num_queued, ledger.num_written) == (2, 0)
    ledger.record(_event(tenants[0], "c"))
    usage.create(engine)
    asyncio.run(ledger.flush())
    assert [r.request_id for r in _rows(engine)] == ["a", "b", "c"] and ledger.num_queued == 0


def test_the_writer_task_retries_until_the_table_is_back(engine, tenants, caplog):
    ledger = _ledger(engine, flush_s=0.001)

    async def main():
        ledger.start()
        usage.drop(engine)
        ledger.record(_event(tenants[0], "a"))
        await _until(lambda: any("will retry" in r.getMessage() for r in caplog.records), "a failed write")
        await _until(lambda: ledger.num_queued == 1, "the row back in the queue")  # (not in a retry in flight)
        assert ledger.num_written == 0
        usage.create(engine)
        await _until(lambda: ledger.num_written == 1, "the retry")
        await ledger.close()

    asyncio.run(main())
    assert [r.request_id for r in _rows(engine)] == ["a"]


def test_close_writes_the_rest(engine, tenants):
    ledger = _ledger(engine, flush_s=3600.0)  # the writer would wait an hour: close() must not

    async def main():
        ledger.start()
        ledger.record(_event(tenants[0], "a"))
        await asyncio.sleep(0)
        ledger.record(_event(tenants[1], "b"))
        await ledger.close()

    asyncio.run(main())
    assert [r.request_id for r in _rows(engine)] == ["a", "b"] and ledger.num_queued == 0


def test_close_waits_for_a_write_in_flight_and_spills_its_row(engine, tenants, caplog):
    """close() during a blocked insert: it returns only once the insert has ended, and the row it could
    not write is spilled to disk for the next start, not lost."""
    ledger = _ledger(engine, flush_s=0.0)

    async def main():
        ledger.start()
        locker = engine.connect()  # holds the table (PostgreSQL) or the write lock (SQLite) until commit
        locker.execute(usage.delete())  # (a DML statement opens SQLite's transaction; DDL alone would not)
        usage.drop(locker)
        try:
            ledger.record(_event(tenants[0], "in-flight"))
            await _until(lambda: ledger.num_queued == 0, "the writer to take the row")  # its insert now waits
            loop = asyncio.get_running_loop()
            release = loop.run_in_executor(None, lambda: (time.sleep(0.3), locker.commit()))
            await ledger.close()  # the insert fails once the lock goes (usage is gone): kept, then spilled
            await release
        finally:
            locker.close()

    asyncio.run(main())
    assert (ledger.num_queued, ledger.num_written, ledger.num_spilled) == (0, 0, 1)
    [spill] = spill_files(ledger.spill_dir)
    assert [row["request_id"] for row in read_spill(spill)] == ["in-flight"]
    assert any("spilled to" in r.getMessage() and str(spill) in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", ["unknown_tenant", "request_id_over_80_chars"])
def test_a_row_the_database_refuses_does_not_block_the_others(engine, tenants, bad):
    """E.g. an X-Request-Id over 80 characters: the gateway takes request ids from clients as they are."""
    ledger = _ledger(engine, flush_s=0.001)
    ledger.record(_event(999_999, "orphan") if bad == "unknown_tenant" else _event(tenants[0], "x" * 81))
    ledger.record(_event(tenants[0], "good"))
    for _ in range(3):
        asyncio.run(ledger.flush())
    assert "good" in [r.request_id for r in _rows(engine)], (
        f"BUG: one row the database never accepts ({bad}) keeps every row queued with it unwritten forever "
        f"(queued {ledger.num_queued}, written {ledger.num_written})")


# -- reports ---------------------------------------------------------------------------------------
@pytest.fixture
def ledger_rows(engine, tenants) -> tuple[int, int]:
    acme, beta = tenants
    ledger = _ledger(engine)
    for event in (  # r1 moved to another replica: two rows, one request
        _event(acme, "r1", prompt_tokens=100, cached_tokens=20, completion_tokens=10, device_seconds=1.0,
               ended_at=DAY1),
        _event(acme, "r1", completion_tokens=30, device_seconds=3.0, ended_at=DAY1 + dt.timedelta(seconds=5)),
        _event(acme, "r2", model="e", prompt_tokens=50, device_seconds=0.5, ended_at=DAY2),
        _event(beta, "r3", prompt_tokens=200, completion_tokens=60, device_seconds=6.0, ended_at=DAY2),
    ):
        ledger.record(event)
    asyncio.run(ledger.flush())
    return acme, beta


def test_usage_report_by_model(engine, ledger_rows):
    e, m = usage_report(engine, by="model")
    assert (e["model"], e["requests"], e["prompt_tokens"], e["completion_tokens"]) == ("e", 1, 50, 0)
    assert e["device_cost_per_mtok_output"] is None
    assert (m["model"], m["requests"], m["prompt_tokens"], m["cached_tokens"], m["completion_tokens"]) == \
        ("m", 2, 300, 20, 100)
    assert m["device_seconds"] == pytest.approx(10.0)
    assert m["cost_usd"] == pytest.approx((280 * 2.0 + 20 * 0.5 + 100 * 8.0) / 1e6)
    assert m["device_cost_usd"] == pytest.approx(10.0 * 3.6 / 3600)
    assert m["device_cost_per_mtok_output"] == pytest.approx(0.01 / 100 * 1e6)


def test_usage_report_by_day_and_tenant(engine, ledger_rows):
    acme, beta = ledger_rows
    days = usage_report(engine, by="day")
    assert [(d["day"], d["requests"], d["completion_tokens"]) for d in days] == \
        [("2026-11-01", 1, 40), ("2026-11-02", 2, 60)]
    by_tenant = usage_report(engine, by="tenant")
    assert [(t["tenant"], t["requests"], t["prompt_tokens"]) for t in by_tenant] == \
        [(str(acme), 2, 150), (str(beta), 1, 200)]
    assert "device_cost_per_mtok_output" not in days[0]
    with pytest.raises(ValueError, match="by must be"):
        usage_report(engine, by="week")


def test_usage_report_filters(engine, ledger_rows):
    acme, _ = ledger_rows
    assert [(r["model"], r["requests"]) for r in usage_report(engine, tenant_id=acme)] == [("e", 1), ("m", 1)]
    assert [r["model"] for r in usage_report(engine, since=DAY2)] == ["e", "m"]
    assert usage_report(engine, since=DAY2, tenant_id=acme)[0]["model"] == "e"
    until = usage_report(engine, by="day", until=DAY2)
    assert [d["day"] for d in until] == ["2026-11-01"]
    assert usage_report(engine, since=DAY2 + dt.timedelta(seconds=1)) == []


def test_spent_usd_in_each_budget_period(engine, tenants):
    acme, beta = tenants
    ledger = _ledger(engine)
    now = dt.datetime(2026, 11, 15, 12, 34, 56)
    for when, tokens in ((dt.datetime(2026, 10, 31, 23, 59, 59), 1), (dt.datetime(2026, 11, 1), 10),
                         (dt.datetime(2026, 11, 14, 23, 59, 59), 100), (dt.datetime(2026, 11, 15), 1000)):
        ledger.record(_event(acme, completion_tokens=tokens * 1000, ended_at=when))  # tokens x $0.008
    ledger.record(_event(beta, completion_tokens=10**6, ended_at=now))
    asyncio.run(ledger.flush())
    assert period_start("day", now) == dt.datetime(2026, 11, 15)
    assert period_start("month", now) == dt.datetime(2026, 11, 1)
    assert period_start("total", now) is None
    spent = {period: spent_usd(engine, acme, period_start(period, now)) for period in ("day", "month", "total")}
    assert spent == pytest.approx({"day": 8.0, "month": 8.88, "total": 8.888})
    assert spent_usd(engine, 424242, None) == 0.0


def test_parse_time():
    assert parse_time("2026-11-01") == dt.datetime(2026, 11, 1)
    assert parse_time("2026-11-01T12:00:00Z") == dt.datetime(2026, 11, 1, 12)
    assert parse_time(" 2026-11-01T14:00:00+02:00 ") == dt.datetime(2026, 11, 1, 12)
    assert parse_time(None) is None and parse_time("") is None
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    week, hours = parse_time("7d"), parse_time("36h")
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert before - dt.timedelta(days=7) <= week <= after - dt.timedelta(days=7)
    assert before - dt.timedelta(hours=36) <= hours <= after - dt.timedelta(hours=36)
    for bad in ("yesterday", "7w", "d"):
        with pytest.raises(ValueError, match="not a date"):
            parse_time(bad)


def test_device_utilization(engine, ledger_rows):
    busy = device_utilization(engine, DAY1 - dt.timedelta(hours=1), {"m": 20.0, "e": 0.25, "idle": 10.0, "x": 0})
    assert busy == pytest.approx({"m": 0.5, "e": 1.0, "idle": 0.0})  # e: 0.5 s over 0.25 s is capped at 1
    assert device_utilization(engine, DAY2, {"m": 60.0}) == pytest.approx({"m": 0.1})
