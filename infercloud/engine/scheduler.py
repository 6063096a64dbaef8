"""Scheduler: continuous batching with chunked prefill, priority classes and preemption by recompute.

Each step has a token budget (`max_num_batched_tokens`) and a cap on running sequences
(`max_num_seqs`). Priority is vLLM's convention, used end to end from the gateway's tiers: a lower
`priority` is a higher class, served first. Algorithm, per step:
  0. If every sequence slot is taken and a waiting request is of a higher class than the lowest
     running one, that one (lowest class, newest) is preempted to give up its slot; one victim per
     such waiting request. So an interactive request never waits for batch requests to finish.
  1. Running requests, ordered by (higher priority, decoding before prefilling, older first), each get
     what they still need: 1 token for a decode, the rest of their prompt (up to the budget) for a
     prefill in progress. If the KV pool cannot hold the new tokens, the last running request in that
     order (lowest priority, newest) is preempted: its blocks are freed and it goes back to waiting, to
     be recomputed from scratch later (its cached prefix blocks usually survive and make that cheap).
  2. If nothing was preempted for blocks in 1, waiting requests (higher priority first, earliest due first
     within a class) are admitted while budget, sequence slots and blocks last; each starts after its
     cached prefix and takes a prefill chunk of at most the remaining budget.
  In 1 and 2, prompt work of a class waits while a higher class has prompt tokens to compute (waiting, or
  running and not yet prefilled): such a step holds only the higher class's prefill and everyone's
  decodes, so batch work (an evaluation's judge) never shares a step with an interactive first token.
"Due" is when a request's first token is due: its arrival plus its own deadline (a pipeline's generate
stage brings one: what remains of its end-to-end budget) or plus the model's TTFT target. Requests of one
model without deadlines are therefore served in arrival order; one late in its pipeline goes before a fresh
one with slack (earliest deadline first). "Older" and "newest" in 1 and 0 mean the same order.
A request is sampled only when its step's chunk reaches its last known token.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from infercloud.engine.kv.kv_cache_manager import KVCacheManager
from infercloud.engine.request import FinishReason, Request, RequestStatus


@dataclass
class ScheduledRequest:
    request: Request
    num_new_tokens: int          # tokens computed this step, from request.num_computed_tokens on
    block_ids: list[int]

    @property
    def samples(self) -> bool:
        return self.request.num_computed_tokens + self.num_new_tokens == self.request.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


def due(req: Request) -> float:
    """When the request's first token is due (its arrival where no due time was given)."""
    return req.due_time if req.due_time is not None else req.arrival_time


def _waiting_key(req: Request) -> tuple:
    return (req.priority, due(req))


def _is_prefilling(req: Request) -> bool:
    return req.num_tokens - req.num_computed_tokens > 1


def _running_key(req: Request) -> tuple:
    return (req.priority, _is_prefilling(req), due(req))


class Scheduler:
    def __init__(self, kv: KVCacheManager, max_num_seqs: int, max_num_batched_tokens: int,
                 clock: Callable[[], float] = time.monotonic):
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.clock = clock
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.num_preemptions = 0

    # -- queue management --------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        bisect.insort(self.waiting, req, key=_waiting_key)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, req: Request, reason: FinishReason, stop_reason: str | int | None = None) -> None:
        """End a request (done or aborted): it leaves the queues and its blocks return to the pool."""
        if req.is_finished:
            return
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.kv.free(req)
        req.status = RequestStatus.FINISHED
        req.finish_reason = reason
        req.stop_reason = stop_reason
        req.metrics.finished_time = self.clock()

    # -- one step ----------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        self._free_slots_for_higher_priority(out)
        num_for_slots = len(out.preempted)
        self.running.sort(key=_running_key)
        first_class = self._first_prefill_class()
        held = {id(r) for r in self.running if _is_prefilling(r) and r.priority > first_class}
        budget = self._schedule_running(out, budget, skip=held)
        if len(out.preempted) == num_for_slots:
            budget = self._admit_waiting(out, budget, first_class)
        if held and not any(_is_prefilling(s.request) and s.request.priority == first_class for s in out.scheduled):
            # the higher class's prompt could not go (no blocks): the held prefills go on, never deadlocked
            self._schedule_running(out, budget, skip={id(r) for r in self.running if id(r) not in held})
        return out

    def _schedule_running(self, out: SchedulerOutput, budget: int, skip: set[int]) -> int:
        """Step 1 for the running requests not in `skip` (ids); the budget left."""
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            if id(req) in skip:
                i += 1
                continue
            num_new = min(req.num_tokens - req.num_computed_tokens, budget)
            while self.kv.allocate_slots(req, num_new) is None:
                victim = self.running.pop()
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is req:
                    break
            if req.status != RequestStatus.RUNNING:
                break
            out.scheduled.append(ScheduledRequest(req, num_new, self.kv.block_ids(req)))
            budget -= num_new
            i += 1
        return budget

    def _first_prefill_class(self) -> int | None:
        """The highest class (lowest priority number) with prompt tokens still to compute."""
        classes = [r.priority for r in self.running if _is_prefilling(r)]
        if self.waiting:
            classes.append(self.waiting[0].priority)
        return min(classes, default=None)

    def _free_slots_for_higher_priority(self, out: SchedulerOutput) -> None:
        for req in list(self.waiting):  # highest class first
            if len(self.running) < self.max_num_seqs:
                return
            victim = max(self.running, key=lambda r: (r.priority, due(r)))  # lowest class, due last
            if victim.priority <= req.priority:
                return
            self.running.remove(victim)
            self._preempt(victim)
            out.preempted.append(victim)

    def _admit_waiting(self, out: SchedulerOutput, budget: int, first_class: int | None) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            if first_class is not None and req.priority > first_class:
                break
            computed = self.kv.get_computed_blocks(req) if req.num_computed_tokens == 0 else []
            num_hit = len(computed) * self.kv.block_size
            num_new = min(req.num_tokens - num_hit, budget)
            if self.kv.allocate_slots(req, num_new, computed) is None:
                break
            self.waiting.pop(0)
            if req.metrics.first_scheduled_time is None:  # a readmitted (preempted) request is not counted again
                self.kv.record_prefix_lookup(req, num_hit)
                req.metrics.first_scheduled_time = self.clock()
                req.num_cached_tokens = num_hit
            req.num_computed_tokens = num_hit
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            out.scheduled.append(ScheduledRequest(req, num_new, self.kv.block_ids(req)))
            budget -= num_new
        return budget

    def _preempt(self, req: Request) -> None:
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.metrics.num_preemptions += 1
        self.num_preemptions += 1
        self.add(req)
        req.status = RequestStatus.PREEMPTED

    def update_after_step(self, out: SchedulerOutput) -> None:
        """Advance progress for what the step computed and register newly filled blocks in the cache."""
        for s in out.scheduled:
            s.request.num_computed_tokens += s.num_new_tokens
            self.kv.cache_full_blocks(s.request, s.request.num_computed_tokens)
