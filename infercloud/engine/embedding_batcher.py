"""EmbeddingBatcher: fair dynamic batching of concurrent embedding calls onto one EmbeddingEngine, off the event loop.

Algorithm. A caller's texts or token ids are first made into checked model input by
EmbeddingEngine.prepare on a thread (never on the loop); then the caller joins the ring of live callers
at its end, so the ring holds callers in arrival order. One worker coroutine waits for the first input,
then keeps collecting until max_batch_size inputs are queued or max_wait_ms has passed since the oldest
live caller arrived. It fills a batch round robin: one input from the caller at the head of the ring,
which then goes to the end of the ring if it has inputs left, and so on until the batch is full or the
ring is empty; the ring keeps its order into the next batch. So every batch gives each waiting caller a
share (with n callers and batch size B, about B/n each, the rest to whoever still has inputs), and each
caller's inputs run in order.
New callers first: when some live callers have had nothing computed yet and others have, the next batch
is filled round robin from the new ones alone (as fair queueing serves new flows first), unless the
batch before was such a batch: new and old batches alternate, so a stream of small requests cannot
starve a big one, and a 1-input request that arrives behind a 2,048-input one waits for the batch being
computed and then runs in a batch of its own, not in a full batch of the big one's inputs (a batch
costs about its number of inputs on a CPU) and not behind the whole job.
A caller whose future is done (cancelled because its client left, or failed) leaves the ring at once:
its remaining inputs are never computed (stats count them as dropped). The batch is sorted by token
length (so that the engine's padded chunks hold similar lengths), run on a dedicated single thread (the
loop never blocks, and the engine sees one batch at a time), put back in order, and each caller gets
its own slices. A caller's future resolves when its last input is done, with its token counts and its
share (by tokens) of the device time of each batch it was in; if a batch fails, every caller in it gets
the exception.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from infercloud.engine.embedding_engine import EmbeddingEngine


class Embedded(NamedTuple):
    vectors: torch.Tensor          # [n, dim], float32, CPU
    token_counts: list[int]
    device_seconds: float          # the caller's share (by tokens) of the batches its inputs ran in


class BatcherStoppedError(RuntimeError):
    """The batcher was stopped before this call's embeddings were computed."""


@dataclass(frozen=True)
class BatcherStats:
    batches_run: int
    texts_embedded: int
    tokens_embedded: int
    inputs_dropped: int = 0        # inputs of callers that left (cancelled or failed) before they were computed

    @property
    def mean_batch_size(self) -> float | None:
        return self.texts_embedded / self.batches_run if self.batches_run else None


@dataclass(eq=False)
class _Pending:
    """One caller: its token ids, how many are already taken into batches, and the results so far."""

    inputs: list[list[int]]
    future: asyncio.Future
    arrived_at: float
    num_taken: int = 0
    parts: list[torch.Tensor] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)
    device_seconds: float = 0.0    # its share (by tokens) of each batch it was in

    @property
    def num_left(self) -> int:
        return len(self.inputs) - self.num_taken

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(frozen=True)
class _Slice:
    pending: _Pending
    start: int
    stop: int


class EmbeddingBatcher:
    def __init__(self, engine: EmbeddingEngine, max_batch_size: int = 32, max_wait_ms: float = 5.0,
                 clock: Callable[[], float] = time.perf_counter):
        """`clock` times each batch, for the callers' device-seconds."""
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be positive and max_wait_ms not negative")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.clock = clock
        self._ring: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._batches_run = self._texts_embedded = self._tokens_embedded = self._inputs_dropped = 0
        self._num_stops = 0            # a call being prepared when stop() runs fails as a waiting one does
        self._last_was_new = False     # the last batch was filled from new callers alone

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker on the running loop (embed calls do this themselves when needed)."""
        if self._worker is not None and not self._worker.done():
            return
        if self._executor is not None:  # left by a worker whose loop has ended
            self._executor.shutdown(wait=False)
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-batcher")
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="embedding-batcher")

    async def stop(self) -> None:
        """Stop the worker; callers still waiting (or being prepared) get BatcherStoppedError."""
        self._num_stops += 1
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self._fail_all(BatcherStoppedError("embedding batcher stopped"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def stats(self) -> BatcherStats:
        return BatcherStats(self._batches_run, self._texts_embedded, self._tokens_embedded, self._inputs_dropped)

    # -- callers -----------------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], truncate_to: int | None = None) -> Embedded:
        """Embeddings [n, dim] (float32, CPU), token counts and device-seconds, computed in shared batches.

        Texts are tokenized and checked off the loop first (EmbeddingEngine.prepare: over-long input
        raises InputTooLongError unless `truncate_to` is given), before they join a batch.
        """
        return await self._prepare_and_submit(list(texts), truncate_to)

    async def embed_tokens(self, token_ids: Sequence[Sequence[int]], truncate_to: int | None = None) -> Embedded:
        """As EmbeddingEngine.embed_tokens, batched; bad or over-long ids are rejected before they join a batch."""
        return await self._prepare_and_submit(list(token_ids), truncate_to)

    async def _prepare_and_submit(self, inputs: list, truncate_to: int | None) -> Embedded:
        num_stops = self._num_stops
        token_ids = await asyncio.to_thread(self.engine.prepare, inputs, truncate_to)
        if self._num_stops != num_stops:
            raise BatcherStoppedError("embedding batcher stopped")
        return await self.submit(token_ids)

    async def submit(self, token_ids: list[list[int]]) -> Embedded:
        """Embed model input as EmbeddingEngine.prepare makes it (valid ids, none over max_seq_length)."""
        if not token_ids:
            return Embedded(torch.empty(0, self.engine.dim), [], 0.0)
        self.start()
        loop = asyncio.get_running_loop()
        pending = _Pending(token_ids, loop.create_future(), loop.time())
        self._ring.append(pending)
        self._arrived.set()
        return await pending.future

    # -- worker ------------------------------------------------------------------------------------
    async def _work(self) -> None:
        try:
            while True:
                await self._wait_for_batch()
                slices = self._take_batch()
                if slices:
                    await self._execute(slices)
        except Exception as exc:  # a bug here must not leave callers waiting forever
            self._fail_all(exc)
            raise

    async def _wait_for_batch(self) -> None:
        """Return once a full batch is queued or the oldest live caller has waited max_wait_s."""
        loop = asyncio.get_running_loop()
        while True:
            self._drop_done()
            self._arrived.clear()
            if not self._ring:
                await self._arrived.wait()
                continue
            remaining = min(p.arrived_at for p in self._ring) + self.max_wait_s - loop.time()
            if sum(p.num_left for p in self._ring) >= self.max_batch_size or remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _drop_done(self) -> None:
        """Take callers whose future is done (cancelled or failed) out of the ring; their rest is never run."""
        if any(p.future.done() for p in self._ring):
            self._inputs_dropped += sum(p.num_left for p in self._ring if p.future.done())
            self._ring = deque(p for p in self._ring if not p.future.done())

    def _take_batch(self) -> list[_Slice]:
        """Up to max_batch_size inputs, one at a time from the head of the ring, round robin; from the new
        callers alone when there are old ones too and the last batch was not such a batch (see the top)."""
        self._drop_done()
        new = deque(p for p in self._ring if p.num_taken == 0)
        new_first = 0 < len(new) < len(self._ring) and not self._last_was_new
        self._last_was_new = new_first
        ring = new if new_first else self._ring
        taken: dict[_Pending, int] = {}
        room = self.max_batch_size
        while ring and room:
            pending = ring.popleft()
            pending.num_taken += 1
            taken[pending] = taken.get(pending, 0) + 1
            room -= 1
            if pending.num_left:
                ring.append(pending)
        if new_first:   # the new callers keep their places at the end of the ring
            self._ring = deque(p for p in self._ring if p.num_left)
        return [_Slice(p, p.num_taken - n, p.num_taken) for p, n in taken.items()]

    async def _execute(self, slices: list[_Slice]) -> None:
        inputs = [x for s in slices for x in s.pending.inputs[s.start:s.stop]]
        loop = asyncio.get_running_loop()
        try:
            started = self.clock()
            vectors, counts = await loop.run_in_executor(self._executor, self._run_batch, inputs)
            batch_s = self.clock() - started
        except Exception as exc:
            for s in slices:
                s.pending.fail(exc)
            return
        except asyncio.CancelledError:
            for s in slices:
                s.pending.fail(BatcherStoppedError("embedding batcher stopped"))
            raise
        self._batches_run += 1
        self._texts_embedded += len(inputs)
        self._tokens_embedded += sum(counts)
        offset, total_tokens = 0, max(sum(counts), 1)
        for s in slices:
            n, pending = s.stop - s.start, s.pending
            pending.parts.append(vectors[offset:offset + n])
            pending.token_counts.extend(counts[offset:offset + n])
            pending.device_seconds += batch_s * sum(counts[offset:offset + n]) / total_tokens
            offset += n
            if s.stop == len(pending.inputs) and not pending.future.done():
                pending.future.set_result(Embedded(torch.cat(pending.parts), pending.token_counts,
                                                   pending.device_seconds))

    def _run_batch(self, seqs: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
        """On the batcher thread: sort by length, embed, restore the callers' order."""
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        sorted_vectors, sorted_counts = self.engine.embed_tokens([seqs[i] for i in order])
        vectors = torch.empty_like(sorted_vectors)
        vectors[torch.tensor(order)] = sorted_vectors
        counts = [0] * len(seqs)
        for i, count in zip(order, sorted_counts):
            counts[i] = count
        return vectors, counts

    def _fail_all(self, exc: BaseException) -> None:
        for pending in self._ring:
            pending.fail(exc)
        self._ring.clear()
