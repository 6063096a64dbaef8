"""EmbeddingBatcher: dynamic batching of concurrent embedding calls onto one EmbeddingEngine, off the event loop.

Algorithm. Callers append their inputs and a future to a FIFO. One worker coroutine waits for the first
input, then keeps collecting until max_batch_size inputs are queued or max_wait_ms has passed since the
oldest queued caller arrived. It takes up to max_batch_size inputs in arrival order: a caller with more
inputs than fit is split, and its rest stays at the head of the queue for the next batch; callers whose
future is already done (cancelled) are skipped. The batch is sorted by token length (so that the engine's
padded chunks hold similar lengths), run on a dedicated single thread (the loop never blocks, and the
engine sees one batch at a time), put back in order, and each caller gets its own slice. A caller's
future resolves when its last slice is done; if a batch fails, every caller in it gets the exception.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from infercloud.engine.embedding_engine import EmbeddingEngine

EmbedInput = str | list[int]


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

    @property
    def mean_batch_size(self) -> float | None:
        return self.texts_embedded / self.batches_run if self.batches_run else None


@dataclass
class _Pending:
    """One caller: its inputs, how many are already taken into batches, and the results so far."""

    inputs: list[EmbedInput]
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
    def __init__(self, engine: EmbeddingEngine, max_batch_size: int = 32, max_wait_ms: float = 5.0):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be positive and max_wait_ms not negative")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self._waiting: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._batches_run = self._texts_embedded = self._tokens_embedded = 0

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
        """Stop the worker; callers still waiting get BatcherStoppedError."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self._fail_all(BatcherStoppedError("embedding batcher stopped"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def stats(self) -> BatcherStats:
        return BatcherStats(self._batches_run, self._texts_embedded, self._tokens_embedded)

    # -- callers -----------------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> Embedded:
        """Embeddings [n, dim] (float32, CPU), token counts and device-seconds, computed in shared batches."""
        return await self._submit(list(texts))

    async def embed_tokens(self, token_ids: Sequence[Sequence[int]]) -> Embedded:
        """As EmbeddingEngine.embed_tokens, batched; bad ids are rejected here, before they join a batch."""
        seqs = [list(ids[:self.engine.max_seq_length]) for ids in token_ids]
        self.engine.validate(seqs)
        return await self._submit(seqs)

    async def _submit(self, inputs: list[EmbedInput]) -> Embedded:
        if not inputs:
            return Embedded(torch.empty(0, self.engine.dim), [], 0.0)
        self.start()
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, loop.create_future(), loop.time())
        self._waiting.append(pending)
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
            while self._waiting and self._waiting[0].future.done():
                self._waiting.popleft()
            live = [p for p in self._waiting if not p.future.done()]
            self._arrived.clear()
            if not live:
                await self._arrived.wait()
                continue
            remaining = live[0].arrived_at + self.max_wait_s - loop.time()
            if sum(p.num_left for p in live) >= self.max_batch_size or remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Slice]:
        slices, room = [], self.max_batch_size
        while self._waiting and room:
            pending = self._waiting[0]
            if pending.future.done():
                self._waiting.popleft()
                continue
            n = min(room, pending.num_left)
            slices.append(_Slice(pending, pending.num_taken, pending.num_taken + n))
            pending.num_taken += n
            room -= n
            if pending.num_left == 0:
                self._waiting.popleft()
        return slices

    async def _execute(self, slices: list[_Slice]) -> None:
        inputs = [x for s in slices for x in s.pending.inputs[s.start:s.stop]]
        loop = asyncio.get_running_loop()
        try:
            started = time.perf_counter()
            vectors, counts = await loop.run_in_executor(self._executor, self._run_batch, inputs)
            batch_s = time.perf_counter() - started
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

    def _run_batch(self, inputs: list[EmbedInput]) -> tuple[torch.Tensor, list[int]]:
        """On the batcher thread: tokenize texts, sort by length, embed, restore the callers' order."""
        tokenized = iter(self.engine.tokenize([x for x in inputs if isinstance(x, str)]))
        seqs = [next(tokenized) if isinstance(x, str) else x for x in inputs]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        sorted_vectors, sorted_counts = self.engine.embed_tokens([seqs[i] for i in order])
        vectors = torch.empty_like(sorted_vectors)
        vectors[torch.tensor(order)] = sorted_vectors
        counts = [0] * len(seqs)
        for i, count in zip(order, sorted_counts):
            counts[i] = count
        return vectors, counts

    def _fail_all(self, exc: BaseException) -> None:
        for pending in self._waiting:
            pending.fail(exc)
        self._waiting.clear()
