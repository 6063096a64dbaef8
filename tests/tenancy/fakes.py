"""Fake clocks for tests: call them for the time, set or advance `now` by hand."""

from __future__ import annotations

import datetime as dt


class FakeClock:
    """A monotonic clock in seconds."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeUtc:
    """A naive-UTC wall clock."""

    def __init__(self, now: dt.datetime = dt.datetime(2026, 11, 15, 12, 0, 0)):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
