"""Ledger: prices usage events and writes them to the SQL `usage` table, many rows per transaction.

`record(event)` prices the event and queues its row at once (the caller never waits for SQL); a
writer task inserts whatever is queued in one transaction every `flush_s` (store/group_commit.py:
group commit, at low load one row per transaction, under load hundreds). Rows that fail because the
database is unreachable stay queued and are tried again (so an outage loses nothing while the gateway
runs); a row the database refuses is logged whole and does not hold back the others; `close()` writes
the rest.
Listeners hear of every priced row (budgets count spend from them before the row is written).

No row is lost at shutdown, none is written twice:
- Every row carries its event's `event_id` (unique in the table). A transaction inserts only the rows
  whose ids are not there yet, so a batch retried after a commit that in fact went through is not
  billed twice (and the unique index stops a race between two writers).
- `close()`: rows still unwritten after the final flush (the database is down) go to a new spill file
  (metering/spill.py: JSON lines, fsynced before close returns) in this database's spill folder.
- `replay()` (awaited at start, before the writer runs): each spill of this database is written in one
  transaction (rows already in the table skipped), then deleted. A crash between the commit and the
  delete replays nothing twice: the next start finds every id already there and only deletes the file.
  A spill that cannot be written at start (the database went down again) stays as it is for the next
  start; its rows are not queued, so a row is only ever in one place, the queue or a spill. (A gateway
  cannot start without its database anyway: opening it creates the schema.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from infercloud.config import PriceSpec
from infercloud.metering.events import UsageEvent, billed_cost, device_cost
from infercloud.metering.spill import read_spill, spill_dir_for, spill_files, write_spill
from infercloud.store.group_commit import GroupCommit
from infercloud.store.schema import usage

log = logging.getLogger("infercloud.metering")

Listener = Callable[[UsageEvent, float], None]  # (event, billed USD)

MAX_IDS_PER_QUERY = 500  # event ids looked up per SELECT ... IN (...) (a replayed spill can be large)


class Ledger:
    def __init__(self, engine: sa.Engine, prices: dict[str, PriceSpec], flush_s: float = 0.05,
                 spill_dir: Path | None = None):
        self.engine = engine
        self.prices = prices
        self.spill_dir = spill_dir or spill_dir_for(engine.url)  # default: under the infercloud home
        self.listeners: list[Listener] = []
        self.rows = GroupCommit("ledger", self._insert, _is_refused, lambda row: row, flush_s)
        self.num_spilled = 0

    @property
    def num_written(self) -> int:
        return self.rows.num_written

    @property
    def num_queued(self) -> int:
        return len(self.rows)

    def record(self, event: UsageEvent) -> dict:
        """Price the event and queue its row; returns the row."""
        price = self.prices.get(event.model, PriceSpec())
        row = {**dataclasses.asdict(event), "cost_usd": billed_cost(event, price),
               "device_cost_usd": device_cost(event, price)}
        self.rows.add([row])
        for listener in self.listeners:
            listener(event, row["cost_usd"])
        return row

    # -- writing (store/group_commit.py) -----------------------------------------------------------
    def start(self) -> None:
        self.rows.start()

    async def flush(self) -> bool:
        """Write every queued row now, in a thread; False if some could not be written (they stay queued)."""
        return await self.rows.flush()

    def _insert(self, rows: list[dict]) -> int:
        """Insert, in one transaction, the rows whose event ids are not in the table yet; how many."""
        with self.engine.begin() as conn:
            fresh = _not_yet_written(conn, rows)
            if fresh:
                conn.execute(usage.insert(), fresh)
        return len(fresh)

    async def close(self) -> None:
        """Stop the writer after its current flush (never in the middle of one), write the rest, and spill
        what cannot be written to disk for the next start."""
        await self.rows.stop()
        if not await self.flush():
            async with self.rows.lock:
                await self._spill()

    async def _spill(self) -> None:
        rows = self.rows.take()
        try:
            path = await asyncio.to_thread(write_spill, self.spill_dir, rows)
        except OSError as exc:  # the last resort: the rows are in the log, for the operator to replay
            self.rows.queued.extendleft(reversed(rows))
            log.error("ledger: %d usage rows could not be written at shutdown nor spilled (%s): %s", len(rows),
                      exc, json.dumps(rows, default=str))
            return
        self.num_spilled += len(rows)
        log.warning("ledger: %d usage rows could not be written at shutdown; spilled to %s (written at the "
                    "next start on this database)", len(rows), path)

    # -- replaying spills --------------------------------------------------------------------------
    async def replay(self) -> None:
        """Write every spill of this database into it, deleting each once its rows are in the table (in a
        thread: SQL never blocks the event loop). Call before `start`."""
        async with self.rows.lock:
            await asyncio.to_thread(self._replay_all)

    def _replay_all(self) -> None:
        for path in spill_files(self.spill_dir):
            self._replay(path)

    def _replay(self, path: Path) -> None:
        try:
            rows = read_spill(path)
        except (OSError, ValueError) as exc:
            log.error("ledger: cannot read the usage spill %s (%s); left in place", path, exc)
            return
        written_before = self.num_written
        if self.rows.write(rows):
            log.warning("ledger: the usage spill %s cannot be written now; kept for the next start", path)
            return
        path.unlink(missing_ok=True)
        num_new = self.num_written - written_before
        log.info("ledger: replayed the usage spill %s: %d rows written, %d already in the table", path, num_new,
                 len(rows) - num_new)


def _not_yet_written(conn: sa.Connection, rows: list[dict]) -> list[dict]:
    """The rows whose event ids are neither in the table nor earlier in `rows` (rows without an id: all)."""
    ids = [row["event_id"] for row in rows if row.get("event_id")]
    present: set[str] = set()
    for start in range(0, len(ids), MAX_IDS_PER_QUERY):
        chunk = ids[start:start + MAX_IDS_PER_QUERY]
        present.update(conn.execute(sa.select(usage.c.event_id).where(usage.c.event_id.in_(chunk))).scalars())
    fresh = []
    for row in rows:
        event_id = row.get("event_id")
        if event_id and event_id in present:
            continue
        if event_id:
            present.add(event_id)
        fresh.append(row)
    return fresh


def _is_refused(exc: Exception) -> bool:
    """The database refused the data itself (a constraint, a value), as opposed to being unreachable,
    locked or missing its table: only such a row is set aside, every other failure is tried again."""
    return isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError))
