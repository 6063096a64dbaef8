"""Ledger: prices usage events and writes them to the SQL `usage` table, many rows per transaction.

`record(event)` prices the event and queues its row at once (the caller never waits for SQL); a
writer task inserts whatever is queued in one transaction every `flush_s` (group commit: at low load
one row per transaction, under load hundreds). Rows that fail because the database is unreachable
stay queued and are tried again (so an outage loses nothing while the gateway runs); a row the
database refuses is logged whole and does not hold back the others; `close()` writes the rest.
Listeners hear of every priced row (budgets count spend from them before the row is written).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable

import sqlalchemy as sa

from infercloud.config import PriceSpec
from infercloud.metering.events import UsageEvent, billed_cost, device_cost
from infercloud.tenancy.db import usage

log = logging.getLogger("infercloud.metering")

Listener = Callable[[UsageEvent, float], None]  # (event, billed USD)


class Ledger:
    def __init__(self, engine: sa.Engine, prices: dict[str, PriceSpec], flush_s: float = 0.05):
        self.engine = engine
        self.prices = prices
        self.flush_s = flush_s
        self.listeners: list[Listener] = []
        self._queued: list[dict] = []
        self._writer: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._stopping: asyncio.Event | None = None
        self.num_written = 0

    def record(self, event: UsageEvent) -> dict:
        """Price the event and queue its row; returns the row."""
        price = self.prices.get(event.model, PriceSpec())
        row = {**dataclasses.asdict(event), "cost_usd": billed_cost(event, price),
               "device_cost_usd": device_cost(event, price)}
        self._queued.append(row)
        for listener in self.listeners:
            listener(event, row["cost_usd"])
        if self._wake is not None:
            self._wake.set()
        return row

    # -- writing -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="ledger-writer")

    async def _write_loop(self) -> None:
        while not self._stopping.is_set():
            await self._wake.wait()
            self._wake.clear()
            await self._pause(self.flush_s)  # let a burst of ends share one transaction
            if not await self.flush():
                await self._pause(min(1.0, self.flush_s * 10))  # the database is down: back off
                self._wake.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when close() is called."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def flush(self) -> bool:
        """Write every queued row now, in a thread (SQL never blocks the event loop); False if some could
        not be written (they stay queued). Flushes run one at a time, so once this returns, every row
        recorded before the call is in the table or still queued, none half way."""
        async with self._flush_lock():
            rows, self._queued = self._queued, []
            if not rows:
                return True
            kept = await asyncio.shield(asyncio.to_thread(self._write, rows))
            self._queued[:0] = kept
            return not kept

    def _flush_lock(self) -> asyncio.Lock:
        if getattr(self, "_lock", None) is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _write(self, rows: list[dict]) -> list[dict]:
        """Insert the rows in one transaction; if that fails, one by one. Returns the rows to try again.

        A row the database refuses on its own (a constraint, a bad value) cannot block the rest: it is
        logged whole, as JSON, for the operator to repair and replay, and dropped from the queue. Rows
        that fail for any other reason (unreachable, locked, no table) are kept.
        """
        try:
            self._insert(rows)
            return []
        except sa.exc.SQLAlchemyError as exc:
            if not _is_refused(exc):
                log.error("ledger: cannot write (%s); %d usage rows kept, will retry", exc, len(rows))
                return rows
        kept = []
        for row in rows:
            try:
                self._insert([row])
            except sa.exc.SQLAlchemyError as exc:
                if not _is_refused(exc):
                    kept.append(row)
                else:
                    log.error("ledger: the database refused a usage row (%s); row: %s", exc.__class__.__name__,
                              json.dumps(row, default=str))
        return kept

    def _insert(self, rows: list[dict]) -> None:
        with self.engine.begin() as conn:
            conn.execute(usage.insert(), rows)
        self.num_written += len(rows)

    async def close(self) -> None:
        """Stop the writer after its current flush (never in the middle of one) and write the rest."""
        if self._writer is not None:
            self._stopping.set()
            self._wake.set()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        if not await self.flush():
            log.error("ledger: %d usage rows could not be written at shutdown: %s", len(self._queued),
                      json.dumps(self._queued, default=str))

    @property
    def num_queued(self) -> int:
        return len(self._queued)


def _is_refused(exc: Exception) -> bool:
    """The database refused the data itself (a constraint, a value), as opposed to being unreachable,
    locked or missing its table: only such a row is set aside, every other failure is tried again."""
    return isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError))
