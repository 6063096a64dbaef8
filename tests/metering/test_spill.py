"""No usage row lost, none written twice: event ids, spills at close, replay at start, older databases."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import stat

import pytest
import sqlalchemy as sa

from infercloud.config import PriceSpec, TenantSpec
from infercloud.metering.events import UsageEvent
from infercloud.metering.ledger import Ledger
from infercloud.metering.spill import read_spill, spill_dir_for, spill_files, write_spill
from infercloud.store.database import open_database
from infercloud.store.schema import usage
from infercloud.tenancy.store import TenantStore

PRICE = PriceSpec(input_per_mtok=2.0, output_per_mtok=8.0)
ENDED_AT = dt.datetime(2026, 11, 1, 10, 0, 5, 123456)


@pytest.fixture
def tenant(engine) -> int:
    return TenantStore(engine).create_tenant(TenantSpec("acme")).id


def _event(tenant_id: int, request_id: str, **usage_) -> UsageEvent:
    return UsageEvent(request_id, tenant_id, None, "m", "/v1/chat/completions", "standard", "completed", 200,
                      prompt_tokens=10, completion_tokens=5, ended_at=ENDED_AT, **usage_)


def _ledger(engine) -> Ledger:
    return Ledger(engine, {"m": PRICE}, flush_s=0.001)


def _rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(usage).order_by(usage.c.id)).all()


def _spill_at_close(engine, events: list[UsageEvent]) -> Ledger:
    """A ledger that records `events` while the usage table is gone (every write fails and is kept), then
    closes; the table is back afterwards, empty."""
    ledger = _ledger(engine)
    usage.drop(engine)

    async def main():
        ledger.start()
        for event in events:
            ledger.record(event)
        await ledger.close()

    asyncio.run(main())
    usage.create(engine)
    return ledger


# -- the spill at close ----------------------------------------------------------------------------
def test_close_spills_what_it_cannot_write_durably_and_privately(engine, tenant, home, caplog):
    events = [_event(tenant, f"r{i}") for i in range(3)]
    ledger = _spill_at_close(engine, events)
    assert (ledger.num_queued, ledger.num_written, ledger.num_spilled) == (0, 0, 3)
    assert ledger.spill_dir == spill_dir_for(engine.url) and ledger.spill_dir.parent == home / "spill"
    [spill] = spill_files(ledger.spill_dir)
    assert stat.S_IMODE(spill.stat().st_mode) == 0o600
    assert [row["event_id"] for row in read_spill(spill)] == [e.event_id for e in events]
    assert len(spill.read_text().splitlines()) == 3  # JSON lines: one row a line
    assert any("3 usage rows" in r.getMessage() and str(spill) in r.getMessage() for r in caplog.records)
    assert _rows(engine) == []


def test_a_spill_is_replayed_at_the_next_start_once(engine, tenant):
    events = [_event(tenant, f"r{i}") for i in range(3)]
    spill_dir = _spill_at_close(engine, events).spill_dir
    restarted = _ledger(engine)
    asyncio.run(restarted.replay())
    rows = _rows(engine)
    assert [(r.request_id, r.event_id) for r in rows] == [(e.request_id, e.event_id) for e in events]
    assert {r.ended_at for r in rows} == {ENDED_AT}  # datetimes round-trip, microseconds and all
    assert rows[0].cost_usd == pytest.approx((10 * 2.0 + 5 * 8.0) / 1e6)
    assert spill_files(spill_dir) == [] and restarted.num_written == 3
    asyncio.run(_ledger(engine).replay())  # a later start: nothing left to replay
    assert len(_rows(engine)) == 3


def test_a_crash_between_the_replay_commit_and_the_delete_replays_nothing_twice(engine, tenant, tmp_path):
    events = [_event(tenant, f"r{i}") for i in range(4)]
    spill_dir = _spill_at_close(engine, events).spill_dir
    [spill] = spill_files(spill_dir)
    survivor = shutil.copy(spill, tmp_path / "survivor")
    asyncio.run(_ledger(engine).replay())  # commits, then deletes the file ...
    shutil.copy(survivor, spill)  # ... which a crash would have left in place
    again = _ledger(engine)
    asyncio.run(again.replay())
    assert [r.request_id for r in _rows(engine)] == ["r0", "r1", "r2", "r3"] and again.num_written == 0
    assert spill_files(spill_dir) == []


def test_a_spill_that_cannot_be_written_yet_stays_for_the_next_start(engine, tenant):
    spill_dir = _spill_at_close(engine, [_event(tenant, "r0")]).spill_dir
    usage.drop(engine)  # the database is still out at the next start
    waiting = _ledger(engine)
    asyncio.run(waiting.replay())
    assert len(spill_files(spill_dir)) == 1 and waiting.num_queued == 0
    usage.create(engine)
    asyncio.run(_ledger(engine).replay())
    assert [r.request_id for r in _rows(engine)] == ["r0"] and spill_files(spill_dir) == []


def test_a_spill_is_replayed_only_into_its_own_database(engine, tenant, tmp_path):
    other = open_database(f"sqlite:///{tmp_path}/other.db")
    try:
        TenantStore(other).create_tenant(TenantSpec("acme"))
        _spill_at_close(engine, [_event(tenant, "r0")])
        asyncio.run(_ledger(other).replay())
        assert _rows(other) == []
    finally:
        other.dispose()
    asyncio.run(_ledger(engine).replay())
    assert [r.request_id for r in _rows(engine)] == ["r0"]


def test_the_spill_folder_is_per_database_and_hides_the_password(tmp_path):
    first = spill_dir_for(sa.make_url("postgresql+psycopg://u:secret@db:5432/cloud"), tmp_path)
    assert first == spill_dir_for(sa.make_url("postgresql+psycopg://u:rotated@db:5432/cloud"), tmp_path)
    assert first != spill_dir_for(sa.make_url("postgresql+psycopg://u:secret@db:5432/other"), tmp_path)
    assert first.parent == tmp_path / "spill" and "secret" not in str(first)
    path = write_spill(first, [{"request_id": "r", "ended_at": ENDED_AT, "not_a_column": 1}])
    assert read_spill(path) == [{"request_id": "r", "ended_at": ENDED_AT}]
    assert stat.S_IMODE(first.stat().st_mode) == 0o700


# -- event ids -------------------------------------------------------------------------------------
def test_a_row_already_in_the_table_is_never_written_twice(engine, tenant, caplog):
    """The retry of a batch whose commit went through (the client saw an error) must not double-bill."""
    ledger = _ledger(engine)
    committed = _event(tenant, "committed")
    ledger.record(committed)
    asyncio.run(ledger.flush())
    ledger.record(committed)  # the same row queued again, as a retry would
    ledger.record(fresh := _event(tenant, "fresh"))
    ledger.record(fresh)
    assert asyncio.run(ledger.flush())
    assert [r.request_id for r in _rows(engine)] == ["committed", "fresh"] and ledger.num_written == 2
    assert ledger.num_queued == 0 and not [r for r in caplog.records if r.levelname == "ERROR"]


def test_the_table_refuses_a_second_row_with_the_same_event_id(engine, tenant):
    row = {"request_id": "r", "tenant_id": tenant, "model": "m", "endpoint": "/v1/x", "tier": "standard",
           "outcome": "completed", "prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0,
           "device_seconds": 0.0, "e2e_s": 0.0, "cost_usd": 0.0, "device_cost_usd": 0.0, "ended_at": ENDED_AT,
           "event_id": "e" * 32}
    with engine.begin() as conn:
        conn.execute(usage.insert(), row)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(usage.insert(), row)


def test_an_older_database_gets_the_event_id_column_and_its_unique_index(database_url, engine, tenant):
    with engine.begin() as conn:  # the usage table as it was before event ids
        conn.execute(sa.text("DROP INDEX ux_usage_event_id"))
        conn.execute(sa.text("ALTER TABLE usage DROP COLUMN event_id"))
        conn.execute(sa.text(
            "INSERT INTO usage (request_id, tenant_id, model, endpoint, tier, outcome, prompt_tokens, cached_tokens, "
            "completion_tokens, device_seconds, e2e_s, cost_usd, device_cost_usd, ended_at) VALUES ('old', :t, 'm', "
            "'/v1/x', 'standard', 'completed', 1, 0, 1, 0, 0, 0, 0, :at)"), {"t": tenant, "at": ENDED_AT})
    engine.dispose()
    upgraded = open_database(database_url)
    try:
        inspector = sa.inspect(upgraded)
        assert "event_id" in {c["name"] for c in inspector.get_columns("usage")}
        [index] = [i for i in inspector.get_indexes("usage") if i["name"] == "ux_usage_event_id"]
        assert index["unique"] and index["column_names"] == ["event_id"]
        ledger = _ledger(upgraded)
        event = _event(tenant, "new")
        ledger.record(event)
        ledger.record(event)
        assert asyncio.run(ledger.flush())
        assert [(r.request_id, r.event_id) for r in _rows(upgraded)] == [("old", None), ("new", event.event_id)]
        open_database(database_url).dispose()  # opening an upgraded database again changes nothing
    finally:
        upgraded.dispose()
