"""The two ways the HF transformers peer runs `generate()`: one request at a time, or static batches.

Both run in one background thread that owns the model; HTTP handlers hand it `GenJob`s and
get tokens back through the job's `emit` callback (thread-safe, supplied by the server).

- naive (`NaiveRunner`): jobs are taken one at a time in arrival order; `generate()` streams
  each new token to the job as it is produced (a streamer on the generate call), so TTFT is
  queueing + prefill, and a stream whose client went away stops at the next token.
- static (`StaticRunner`): the first waiting job opens a batch; up to `max_batch_size` jobs
  that arrive within `max_wait_s` of it join. The batch is left-padded to its longest prompt
  and run through ONE `generate()` of max(max_tokens) new tokens, stopping only when every row
  is done; then each job gets its whole output at once. That is what static batching means
  for latency: no request sees its first token before the longest one in its batch finishes,
  and requests arriving meanwhile wait for the next batch.

Greedy only. `ignore_eos` means EOS does not stop that request (the EOS token is still
produced when it is the argmax, as in vLLM); otherwise the output ends after the first EOS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer


@dataclass
class GenJob:
    """One completion to run: its prompt, its limits, and where its tokens go."""

    prompt_ids: list[int]
    max_tokens: int
    ignore_eos: bool
    emit: Callable[[list[int] | None], None]   # new token ids; None once finished
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class RunnerStats:
    generate_calls: int = 0
    requests: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"generate_calls": self.generate_calls, "requests": self.requests,
                "batch_sizes": self.batch_sizes[-1000:]}


def cut_at_eos(ids: list[int], eos_ids: set[int], max_tokens: int) -> list[int]:
    """The first `max_tokens` ids, ending after the first EOS when there is one."""
    ids = ids[:max_tokens]
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1]
    return ids


class _Runner(ABC):
    """A thread that owns the model and serves jobs from a queue; subclasses say how."""

    def __init__(self, model, eos_ids: set[int], pad_id: int) -> None:
        self.model, self.eos_ids, self.pad_id = model, eos_ids, pad_id
        self.jobs: queue.Queue[GenJob] = queue.Queue()
        self.stats = RunnerStats()
        self.thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: GenJob) -> None:
        self.jobs.put(job)

    def _loop(self) -> None:
        while True:
            batch = self._take()
            try:
                with torch.inference_mode():
                    self._run(batch)
            except Exception:  # a failed generate must not kill the thread or hang the clients
                traceback.print_exc()
                for job in batch:
                    job.emit(None)

    def _generation_config(self, max_new_tokens: int, stop_at_eos: bool) -> GenerationConfig:
        eos = sorted(self.eos_ids) if stop_at_eos else None
        return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                pad_token_id=self.pad_id)

    @abstractmethod
    def _take(self) -> list[GenJob]:
        """Block until work arrives; the jobs to run together next."""

    @abstractmethod
    def _run(self, batch: list[GenJob]) -> None:
        """Generate for one batch, emitting text to each job."""


class _JobStreamer(BaseStreamer):
    """Hands each newly generated token to the job (generate's first `put` is the prompt: skipped)."""

    def __init__(self, job: GenJob, eos_ids: set[int]) -> None:
        self.job, self.eos_ids = job, eos_ids
        self.seen_prompt, self.done = False, False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        if self.done:
            return
        ids = value.reshape(-1).tolist()
        self.job.emit(ids)
        self.done = not self.job.ignore_eos and any(t in self.eos_ids for t in ids)

    def end(self) -> None:
        self.job.emit(None)


class _Cancelled(StoppingCriteria):
    def __init__(self, job: GenJob) -> None:
        self.job = job

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.job.cancelled.is_set(), dtype=torch.bool)


class NaiveRunner(_Runner):
    def _take(self) -> list[GenJob]:
        return [self.jobs.get()]

    def _run(self, batch: list[GenJob]) -> None:
        job = batch[0]
        if job.cancelled.is_set():
            job.emit(None)
            return
        ids = torch.tensor([job.prompt_ids])
        self.stats.generate_calls += 1
        self.stats.requests += 1
        self.stats.batch_sizes.append(1)
        self.model.generate(ids, attention_mask=torch.ones_like(ids),
                            generation_config=self._generation_config(job.max_tokens, not job.ignore_eos),
                            streamer=_JobStreamer(job, self.eos_ids),
                            stopping_criteria=StoppingCriteriaList([_Cancelled(job)]))


class StaticRunner(_Runner):
    def __init__(self, model, eos_ids: set[int], pad_id: int, max_batch_size: int = 8,
                 max_wait_s: float = 0.05) -> None:
        super().__init__(model, eos_ids, pad_id)
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s

    def _take(self) -> list[GenJob]:
        batch = [self.jobs.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self.jobs.get(timeout=remaining))
            except queue.Empty:
                break
        return [job for job in batch if not job.cancelled.is_set()] or batch[:0]

    def _run(self, batch: list[GenJob]) -> None:
        if not batch:
            return
        width = max(len(job.prompt_ids) for job in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, job in enumerate(batch):  # left padding: every prompt ends at the last column
            ids[row, width - len(job.prompt_ids):] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids):] = 1
        stop_at_eos = not any(job.ignore_eos for job in batch)
        config = self._generation_config(max(job.max_tokens for job in batch), stop_at_eos)
        self.stats.generate_calls += 1
        self.stats.requests += len(batch)
        self.stats.batch_sizes.append(len(batch))
        out = self.model.generate(ids, attention_mask=mask, generation_config=config)
        for row, job in enumerate(batch):
            new_ids = out[row, width:].tolist()
            eos = set() if job.ignore_eos else self.eos_ids
            job.emit(cut_at_eos(new_ids, eos, job.max_tokens))
            job.emit(None)
