"""The EmbeddingBatcher's fairness on the real all-MiniLM-L6-v2: round-robin batches, dropped cancelled callers.

Every caller's inputs carry a tag token (its second id) and an index token (its third), so each batch the
engine is handed can be read back as "how many inputs of which caller, in what order".
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter

import pytest
import torch

from infercloud.engine.embedding_batcher import EmbeddingBatcher
from infercloud.engine.embedding_engine import EmbeddingEngine, InputTooLongError

CLS, SEP = 101, 102
TAGS = {"A": 2000, "B": 3000, "C": 4000}   # token ids that mark whose input it is
NAMES = {tag: name for name, tag in TAGS.items()}


class RecordingEngine:
    """The real engine, recording every batch it is given; with `hold_first`, batch 1 waits for `release`."""

    def __init__(self, engine: EmbeddingEngine, hold_first: bool = False):
        self.engine = engine
        self.batches: list[list[list[int]]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def embed_tokens(self, token_ids):
        self.batches.append([list(ids) for ids in token_ids])
        self.first_started.set()
        self.release.wait(timeout=120)
        return self.engine.embed_tokens(token_ids)

    def composition(self) -> list[dict[str, int]]:
        """Per batch: inputs of each caller."""
        return [dict(Counter(NAMES[ids[1]] for ids in batch)) for batch in self.batches]

    def indices(self, name: str) -> list[int]:
        """The index tokens of one caller's inputs, batch after batch (each batch sorted by index)."""
        return [i for batch in self.batches for i in sorted(ids[2] for ids in batch if ids[1] == TAGS[name])]


def inputs(name: str, n: int) -> list[list[int]]:
    """n inputs of caller `name`: [CLS] tag index [SEP], lengths 4 to 6 so batches hold mixed lengths."""
    return [[CLS, TAGS[name], 5000 + i, *[1996] * (i % 3), SEP] for i in range(n)]


def run(coro_fn, recorder: RecordingEngine, max_batch_size: int, clock=None):
    """Run `coro_fn(batcher)` on a fresh loop with a batcher over `recorder` that never waits for more callers."""
    async def main():
        batcher = EmbeddingBatcher(recorder, max_batch_size=max_batch_size, max_wait_ms=0,
                                   **({"clock": clock} if clock else {}))
        try:
            return await coro_fn(batcher), batcher.stats()
        finally:
            await batcher.stop()

    return asyncio.run(main())


class SteppedEngine(RecordingEngine):
    """The real engine, running one batch per `step()` of the test, so arrivals land between known batches."""

    def __init__(self, engine: EmbeddingEngine):
        super().__init__(engine)
        self.gate = threading.Semaphore(0)
        self.started = threading.Semaphore(0)

    def embed_tokens(self, token_ids):
        self.batches.append([list(ids) for ids in token_ids])
        self.started.release()
        self.gate.acquire(timeout=120)
        return self.engine.embed_tokens(token_ids)

    async def next_batch_started(self) -> None:
        assert await asyncio.to_thread(self.started.acquire, True, 120)


def test_new_callers_go_first_but_cannot_starve_an_old_one(engine):
    """B arrives during batch 1: batch 2 is B's alone. D arrives during batch 2 (a batch of new callers):
    batch 3 is round robin over everyone, A included, so new callers cannot keep A waiting."""
    recorder = SteppedEngine(engine)

    async def arrivals(batcher):
        a = asyncio.create_task(batcher.submit(inputs("A", 12)))
        await recorder.next_batch_started()
        b = asyncio.create_task(batcher.submit(inputs("B", 2)))
        await asyncio.sleep(0.01)
        recorder.gate.release()
        await recorder.next_batch_started()
        c = asyncio.create_task(batcher.submit(inputs("C", 2)))
        await asyncio.sleep(0.01)
        for _ in range(8):
            recorder.gate.release()
        return await asyncio.gather(a, b, c)

    run(arrivals, recorder, max_batch_size=4)
    assert recorder.composition() == [{"A": 4}, {"B": 2}, {"A": 2, "C": 2}, {"A": 4}, {"A": 2}]


def test_callers_together_share_each_batch_round_robin(engine):
    recorder = RecordingEngine(engine)

    async def three_callers(batcher):
        return await asyncio.gather(batcher.submit(inputs("A", 10)), batcher.submit(inputs("B", 10)),
                                    batcher.submit(inputs("C", 1)))

    (a, b, c), stats = run(three_callers, recorder, max_batch_size=4)
    # the ring A B C: A B C A | B A B A | B A B A | B A B A | B B  (C leaves after its one input)
    assert recorder.composition() == [{"A": 2, "B": 1, "C": 1}, {"A": 2, "B": 2}, {"A": 2, "B": 2},
                                      {"A": 2, "B": 2}, {"A": 2, "B": 2}, {"B": 1}]
    assert recorder.indices("A") == recorder.indices("B") == [5000 + i for i in range(10)]
    for result, name, n in ((a, "A", 10), (b, "B", 10), (c, "C", 1)):
        want, want_counts = engine.embed_tokens(inputs(name, n))
        assert result.token_counts == want_counts
        torch.testing.assert_close(result.vectors, want, atol=1e-5, rtol=0)
    assert (stats.batches_run, stats.texts_embedded, stats.inputs_dropped) == (6, 21, 0)


def test_the_ring_order_carries_over_between_batches(engine):
    recorder = RecordingEngine(engine)

    async def two_callers(batcher):
        return await asyncio.gather(batcher.submit(inputs("A", 6)), batcher.submit(inputs("B", 6)))

    run(two_callers, recorder, max_batch_size=3)
    assert recorder.composition() == [{"A": 2, "B": 1}, {"A": 1, "B": 2}, {"A": 2, "B": 1}, {"A": 1, "B": 2}]


def test_a_small_request_behind_a_big_one_rides_in_the_next_batch(engine):
    recorder = RecordingEngine(engine, hold_first=True)
    ticks = itertools.count()

    async def big_then_small(batcher):
        big = asyncio.create_task(batcher.submit(inputs("A", 100)))
        await asyncio.to_thread(recorder.first_started.wait, 120)    # batch 1 (A only) is being computed
        small = asyncio.create_task(batcher.submit(inputs("B", 1)))
        await asyncio.sleep(0)                                        # B has joined the ring
        recorder.release.set()
        return await asyncio.gather(big, small)

    (big, small), stats = run(big_then_small, recorder, max_batch_size=32, clock=lambda: float(next(ticks)))
    # the new caller runs alone in the next batch, not in a full one of A's inputs
    assert recorder.composition() == [{"A": 32}, {"B": 1}, {"A": 32}, {"A": 32}, {"A": 4}]
    assert recorder.indices("A") == [5000 + i for i in range(100)]
    torch.testing.assert_close(small.vectors, engine.embed_tokens(inputs("B", 1))[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(big.vectors, engine.embed_tokens(inputs("A", 100))[0], atol=1e-5, rtol=0)
    # each batch takes one tick of the clock; a caller pays its share by tokens of each batch it was in
    assert small.device_seconds == pytest.approx(1.0)
    assert big.device_seconds + small.device_seconds == pytest.approx(5.0)
    assert sum(big.token_counts) + sum(small.token_counts) == stats.tokens_embedded


def test_a_cancelled_callers_remaining_inputs_are_never_computed(engine):
    recorder = RecordingEngine(engine, hold_first=True)

    async def cancel_big_during_first_batch(batcher):
        big = asyncio.create_task(batcher.submit(inputs("A", 100)))
        small = asyncio.create_task(batcher.submit(inputs("B", 3)))
        await asyncio.to_thread(recorder.first_started.wait, 120)
        big.cancel()
        recorder.release.set()
        served = await small
        with pytest.raises(asyncio.CancelledError):
            await big
        later = await batcher.submit(inputs("C", 1))
        return served, later

    (served, later), stats = run(cancel_big_during_first_batch, recorder, max_batch_size=32)
    assert recorder.composition() == [{"A": 29, "B": 3}, {"C": 1}]   # none of A's other 71 inputs ran
    assert (stats.batches_run, stats.texts_embedded, stats.inputs_dropped) == (2, 33, 71)
    torch.testing.assert_close(served.vectors, engine.embed_tokens(inputs("B", 3))[0], atol=1e-5, rtol=0)
    assert later.token_counts == [4]


def test_texts_are_checked_off_the_loop_before_they_join_a_batch(engine):
    recorder = RecordingEngine(engine)
    long_text = "the cat sat on a mat and " * 50    # 350 words of one token each: 352 tokens
    prepared_on: list[threading.Thread] = []
    recorder.prepare = lambda *args: (prepared_on.append(threading.current_thread()), engine.prepare(*args))[1]

    async def long_then_truncated(batcher):
        with pytest.raises(InputTooLongError) as refused:
            await batcher.embed(["short", long_text])
        assert (refused.value.index, refused.value.num_tokens, refused.value.limit) == (1, 352, 256)
        return await batcher.embed([long_text], truncate_to=256)

    result, _ = run(long_then_truncated, recorder, max_batch_size=8)
    assert prepared_on and threading.main_thread() not in prepared_on
    assert len(recorder.batches) == 1 and result.token_counts == [256]   # the refused call ran nothing
    cut = engine.tokenize([long_text])[0][:255] + [SEP]
    torch.testing.assert_close(result.vectors, engine.embed_tokens([cut])[0], atol=1e-5, rtol=0)
