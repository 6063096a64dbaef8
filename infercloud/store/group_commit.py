"""GroupCommit: rows the request path hands over at once, written by one task, many per transaction.

`add(rows)` queues them and never waits (past `max_queued`, where set, the oldest are dropped and counted,
with a warning at most every WARN_EVERY_S). The writer task wakes on new rows, waits `flush_s` so that a
burst shares one transaction (group commit: one row per transaction at low load, hundreds under load),
then flushes; a flush that leaves rows (the database is down) backs off, up to 1 s, and tries again.
`write(rows)` is one attempt (called in a thread): the whole batch in one `insert`; if that fails because
of a row's own data (`refused(exc)`: a constraint, a value), row by row, each refused row logged whole
(`describe`) and dropped, so it cannot hold back the others; rows that failed for any other reason are
returned, to try again. Flushes run one at a time (`lock`): once `flush()` returns, every row added before
it is written or still queued, none half way. `stop()` ends the writer after its current flush; what is
left is its owner's (the ledger spills it to disk, the audit log logs it).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("infercloud.store")

R = TypeVar("R")
WARN_EVERY_S = 10.0


class GroupCommit(Generic[R]):
    def __init__(self, name: str, insert: Callable[[list[R]], int], refused: Callable[[Exception], bool],
                 describe: Callable[[R], object], flush_s: float = 0.05, max_queued: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name                      # in log lines: "ledger", "audit"
        self.insert = insert                  # one transaction; returns how many rows it wrote
        self.refused = refused
        self.describe = describe              # a row as JSON-able data, for the log
        self.flush_s = flush_s
        self.max_queued = max_queued
        self.clock = clock                    # paces the warnings about dropped rows
        self.queued: collections.deque[R] = collections.deque()
        self.lock = asyncio.Lock()            # one flush at a time
        self.num_written = 0
        self.num_dropped = 0
        self._writer: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._warned_at: float | None = None

    def __len__(self) -> int:
        return len(self.queued)

    def add(self, rows: list[R]) -> None:
        self.queued.extend(rows)
        self._bound()
        if self._wake is not None and rows:
            self._wake.set()

    def _bound(self) -> None:
        over = len(self.queued) - self.max_queued if self.max_queued is not None else 0
        if over <= 0:
            return
        for _ in range(over):
            self.queued.popleft()
        self.num_dropped += over
        now = self.clock()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("%s: more than %d rows unwritten; the oldest dropped (%d so far)", self.name,
                        self.max_queued, self.num_dropped)

    def take(self) -> list[R]:
        """Every queued row, taken off the queue (the owner's, once the writer is stopped)."""
        rows = list(self.queued)
        self.queued.clear()
        return rows

    # -- the writer --------------------------------------------------------------------------------
    def start(self) -> None:
        """Write what is queued every `flush_s` from now on (call in the event loop)."""
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()
        if self.queued:
            self._wake.set()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name=f"{self.name}-writer")

    async def stop(self) -> None:
        """End the writer after its current flush (never in the middle of one)."""
        if self._writer is not None:
            self._stopping.set()
            self._wake.set()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None

    async def _write_loop(self) -> None:
        while not self._stopping.is_set():
            await self._wake.wait()
            self._wake.clear()
            await self._pause(self.flush_s)   # let a burst of rows share one transaction
            if not await self.flush():
                await self._pause(min(1.0, self.flush_s * 10))   # the database is down: back off
                self._wake.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stop() is called."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def flush(self) -> bool:
        """Write every queued row now, in a thread (SQL never blocks the event loop); False if some could not
        be written (they stay queued, first)."""
        async with self.lock:
            rows = self.take()
            if not rows:
                return True
            kept = await asyncio.shield(asyncio.to_thread(self.write, rows))
            self.queued.extendleft(reversed(kept))
            self._bound()
            return not kept

    def write(self, rows: list[R]) -> list[R]:
        """One attempt at the rows: in one transaction, else one by one (see above). Returns the rows to try
        again."""
        try:
            self.num_written += self.insert(rows)
            return []
        except Exception as exc:   # noqa: BLE001 - whatever it is, the rows must not be lost here
            if not self.refused(exc):
                log.error("%s: cannot write (%s); %d rows kept, will retry", self.name, exc, len(rows))
                return rows
        kept = []
        for row in rows:
            try:
                self.num_written += self.insert([row])
            except Exception as exc:   # noqa: BLE001
                if self.refused(exc):
                    log.error("%s: the database refused a row (%s); row: %s", self.name, exc.__class__.__name__,
                              json.dumps(self.describe(row), default=str))
                else:
                    kept.append(row)
        return kept
