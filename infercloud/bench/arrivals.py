"""Arrival processes: when a benchmark sends each request (closed loop, Gamma open loop, fixed schedule).

Each process has one method, `drive(requests, send)`: it takes the next request from the iterable at
the moment it sends it, so a duration limit is an iterable that ends (`until`), and waits until every
request it sent has ended.
  - ClosedLoop(c): c senders, each sending its next request as soon as its previous one ends:
    exactly c in flight (fewer only at the end).
  - GammaArrivals(rate r, burstiness b): open loop; gaps between sends are Gamma(shape b, scale
    1 / (r b)), so the mean gap is 1 / r and the coefficient of variation 1 / sqrt(b): b = 1 is a
    Poisson process, b < 1 burstier, b > 1 more regular (vLLM's definition). The first request goes at
    t = 0; r = inf sends everything at once. Requests never wait for earlier ones.
  - Scheduled: every request at its own `send_offset_s` after the start (fixed scenarios such as W6).
Clocks, sleeps and random generators are injected so tests run without real time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from infercloud.bench.workloads import BenchRequest

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Send = Callable[[BenchRequest], Awaitable[None]]


class ArrivalProcess(Protocol):
    @property
    def max_in_flight(self) -> int | None:
        """The most requests it ever has in flight (None: unbounded); sizes the connection pool."""

    async def drive(self, requests: Iterable[BenchRequest], send: Send) -> None:
        """Call `send` for every request, in order, at the times the process chooses; return when all ended."""


@dataclass(frozen=True)
class ClosedLoop:
    concurrency: int

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")

    @property
    def max_in_flight(self) -> int:
        return self.concurrency

    async def drive(self, requests: Iterable[BenchRequest], send: Send) -> None:
        pending = iter(requests)  # shared by the senders; next() never yields, so each request goes once

        async def sender() -> None:
            for req in pending:
                await send(req)

        num_senders = min(self.concurrency, len(requests)) if hasattr(requests, "__len__") else self.concurrency
        await asyncio.gather(*(sender() for _ in range(num_senders)))


def gamma_gaps(rng: np.random.Generator, rate: float, burstiness: float, n: int) -> np.ndarray:
    """n gaps (seconds) between sends: Gamma(shape b, scale 1 / (r b)); zeros for an infinite rate."""
    if rate <= 0 or burstiness <= 0:
        raise ValueError("request rate and burstiness must be positive")
    if math.isinf(rate):
        return np.zeros(n)
    return rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)


@dataclass
class GammaArrivals:
    rate: float
    burstiness: float
    rng: np.random.Generator
    clock: Clock = time.perf_counter
    sleep: Sleep = asyncio.sleep

    def __post_init__(self) -> None:
        gamma_gaps(self.rng, self.rate, self.burstiness, 0)  # validates

    @property
    def max_in_flight(self) -> None:
        return None

    async def drive(self, requests: Iterable[BenchRequest], send: Send) -> None:
        pending, tasks = iter(requests), []
        send_at = self.clock()
        while True:
            await self.sleep(max(0.0, send_at - self.clock()))
            req = next(pending, None)
            if req is None:
                break
            tasks.append(asyncio.ensure_future(send(req)))
            send_at += float(gamma_gaps(self.rng, self.rate, self.burstiness, 1)[0])
        await asyncio.gather(*tasks)


@dataclass
class Scheduled:
    clock: Clock = time.perf_counter
    sleep: Sleep = asyncio.sleep
    max_in_flight: int | None = field(default=None, init=False)

    async def drive(self, requests: Iterable[BenchRequest], send: Send) -> None:
        start = self.clock()
        ordered = sorted(requests, key=lambda r: r.send_offset_s or 0.0)

        async def send_at(req: BenchRequest) -> None:
            await self.sleep(max(0.0, start + (req.send_offset_s or 0.0) - self.clock()))
            await send(req)

        await asyncio.gather(*(send_at(req) for req in ordered))


def until(requests: Iterable[BenchRequest], duration_s: float, clock: Clock) -> Iterator[BenchRequest]:
    """`requests` for `duration_s` seconds, counted from when the first one is taken (a run's duration)."""
    deadline_s: float | None = None
    for req in requests:
        now = clock()
        deadline_s = now + duration_s if deadline_s is None else deadline_s
        if now >= deadline_s:
            return
        yield req
