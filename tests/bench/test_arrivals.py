"""Arrival processes: Gamma gaps (rate, burstiness), the open-loop driver on a fake clock, closed loop, schedules."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from infercloud.bench.arrivals import ClosedLoop, GammaArrivals, Scheduled, gamma_gaps, until
from infercloud.bench.workloads import BenchRequest


class FakeTime:
    """A clock that only moves when someone sleeps: a sleeper lets the others run, then time jumps to its wake-up."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake_at = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, wake_at)


def make_requests(n: int) -> list[BenchRequest]:
    return [BenchRequest(f"r{i}", [100, 101], 1) for i in range(n)]


def cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


# -- Gamma gaps ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 4.0])
def test_gamma_gaps_have_the_mean_rate_and_cv_of_their_burstiness(burstiness):
    gaps = gamma_gaps(np.random.default_rng(42), rate=5.0, burstiness=burstiness, n=200_000)
    assert 1 / gaps.mean() == pytest.approx(5.0, rel=0.02)
    assert cv(gaps) == pytest.approx(1 / np.sqrt(burstiness), rel=0.03)


def test_burstier_than_poisson_has_cv_above_one_and_poisson_about_one():
    rng = np.random.default_rng(7)
    assert cv(gamma_gaps(rng, rate=2.0, burstiness=0.5, n=100_000)) > 1.2
    assert cv(gamma_gaps(rng, rate=2.0, burstiness=1.0, n=100_000)) == pytest.approx(1.0, abs=0.03)


def test_gamma_gaps_are_seeded_and_validated():
    a = gamma_gaps(np.random.default_rng(3), 1.0, 0.5, 10)
    assert np.array_equal(a, gamma_gaps(np.random.default_rng(3), 1.0, 0.5, 10))
    assert np.array_equal(gamma_gaps(np.random.default_rng(3), float("inf"), 1.0, 4), np.zeros(4))
    for rate, burstiness in ((0.0, 1.0), (-1.0, 1.0), (1.0, 0.0)):
        with pytest.raises(ValueError):
            gamma_gaps(np.random.default_rng(0), rate, burstiness, 1)


# -- drivers ---------------------------------------------------------------------------------------------
def test_gamma_arrivals_send_at_the_cumulative_gaps_without_waiting_for_replies():
    fake = FakeTime()
    sent: list[tuple[str, float]] = []
    all_sent = asyncio.Event()

    async def send(req: BenchRequest) -> None:
        sent.append((req.request_id, fake.clock()))
        if len(sent) == 6:
            all_sent.set()
        await asyncio.wait_for(all_sent.wait(), timeout=10)  # no reply before every request went out

    arrivals = GammaArrivals(2.0, 0.5, np.random.default_rng(11), clock=fake.clock, sleep=fake.sleep)
    asyncio.run(arrivals.drive(make_requests(6), send))
    expected = np.concatenate([[0.0], np.cumsum(gamma_gaps(np.random.default_rng(11), 2.0, 0.5, 5))])
    assert [rid for rid, _ in sent] == [f"r{i}" for i in range(6)]
    assert [t for _, t in sent] == pytest.approx(expected.tolist())
    assert arrivals.max_in_flight is None


def test_closed_loop_never_exceeds_c_with_a_lazy_request_stream():
    in_flight, most, sent = 0, 0, []

    async def send(req: BenchRequest) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        sent.append(req.request_id)
        await asyncio.sleep(0.001 * (len(sent) % 4))
        in_flight -= 1

    asyncio.run(ClosedLoop(4).drive(iter(make_requests(13)), send))
    assert most == 4 and in_flight == 0
    assert sent == [f"r{i}" for i in range(13)]


def test_until_stops_taking_requests_at_the_deadline():
    fake = FakeTime()

    def endless():
        i = 0
        while True:
            yield BenchRequest(f"r{i}", [100], 1)
            i += 1

    taken = []
    for req in until(endless(), duration_s=1.0, clock=fake.clock):
        taken.append(req.request_id)
        fake.now += 0.3        # each request is taken 0.3 s after the previous one: at 0, 0.3, 0.6, 0.9
    assert taken == ["r0", "r1", "r2", "r3"]


def test_scheduled_sends_each_request_at_its_offset():
    fake = FakeTime()
    sent: dict[str, float] = {}

    async def send(req: BenchRequest) -> None:
        sent[req.request_id] = fake.clock()

    offsets = (0.0, 2.5, 0.0, 1.0)
    requests = [replace(r, send_offset_s=offset) for r, offset in zip(make_requests(4), offsets)]
    asyncio.run(Scheduled(clock=fake.clock, sleep=fake.sleep).drive(requests, send))
    assert sent == pytest.approx({f"r{i}": offset for i, offset in enumerate(offsets)})
