"""Background: the tasks the controller runs beside its loop (worker starts, model loads, drains), and the
starts in progress by slot, so a tick never starts the same worker twice."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine, Hashable

log = logging.getLogger("infercloud.controller")


class Background:
    def __init__(self) -> None:
        self.starting: Counter[Hashable] = Counter()   # slot key -> starts in progress
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, work: Coroutine) -> asyncio.Task:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start(self, key: Hashable, work: Coroutine, what: str) -> None:
        """Start a worker without holding up the loop (on Ray, placement may wait for a node); `key` counts it
        as starting meanwhile. A start that fails is logged: the next tick tries again."""
        self.starting[key] += 1

        async def run() -> None:
            try:
                await work
            except Exception as exc:  # noqa: BLE001 - no node could take it now
                log.warning("could not start %s: %s", what, exc)
            finally:
                self.starting[key] -= 1

        self.spawn(run())

    async def wait(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
