"""StepLoop: one thread that steps the engines of every model a worker hosts, choosing which steps next.

Models that share a device share its time: one forward pass runs at a time, so the question is only
whose pass is next (token-level multiplexing, the idea behind Aegaeon, SOSP 2025). Each engine with
work gets a deadline, and the earliest deadline steps next:

  base     = the end of the engine's last step (or, if it was idle, the arrival of its oldest request)
  decoding = it has requests that already have a token: they are due one more by base + TPOT target
  waiting  = requests still without a token: due by their due time (arrival + their own deadline, or + the
             model's TTFT target: engine/scheduler.py)
  deadline = max(base, min(those due times) - its expected step time)

"slo" (default) uses each model's own targets (`SLO`; a model without one gets `default_ttft_s` and
`default_tpot_s`), so a model with a tight TPOT target steps several times while one with a loose
target waits, and each steps when it is closest to missing its target. A deadline is never before the
engine's last step, so an engine that has just stepped cannot take the next step from one that is due
(no model starves, even one whose target cannot be met). "fcfs" ignores targets: the engine that has
waited longest since its last step goes next (round robin over busy engines), the baseline the
benchmarks compare with.

Engines are built and dropped on this thread too (`call`), so all torch work stays on one thread and
one OpenMP pool. A step that raises kills only its own engine: the others keep going.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from infercloud.engine.engine import LLMEngine

log = logging.getLogger("infercloud.engine")

Policy = Literal["slo", "fcfs"]
POLICIES = ("slo", "fcfs")


@dataclass(frozen=True)
class SLO:
    """A model's latency targets: time to first token and time per output token, in seconds."""

    ttft_s: float | None = None
    tpot_s: float | None = None


class Steppable(Protocol):
    """What the loop needs of an engine's driver (AsyncLLMEngine)."""

    engine: LLMEngine | None
    slo: SLO

    def apply_commands(self) -> None: ...
    def has_work(self) -> bool: ...
    def step_once(self) -> None: ...
    def fail(self, exc: BaseException) -> None: ...


@dataclass
class _Timing:
    last_step_end: float | None = None
    step_s: float = 0.0            # moving average of its step durations


class StepLoop:
    def __init__(self, policy: Policy = "slo", default_ttft_s: float = 2.0, default_tpot_s: float = 0.2,
                 idle_wait_s: float = 0.05, clock: Callable[[], float] = time.monotonic):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.default_slo = SLO(default_ttft_s, default_tpot_s)
        self.idle_wait_s = idle_wait_s
        self.clock = clock
        self.last_heartbeat = clock()
        self.error: BaseException | None = None
        self.num_steps: dict[int, int] = {}
        self._members: dict[int, tuple[Steppable, _Timing]] = {}
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-step-loop", daemon=True)
        self._thread.start()

    # -- any thread --------------------------------------------------------------------------------
    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        self._wakeup.set()

    def call(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the loop thread between steps and return its result (or raise its error)."""
        if threading.current_thread() is self._thread:
            return fn()
        future: Future = Future()
        self._calls.put((fn, future))
        self._wakeup.set()
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                if not self._thread.is_alive():
                    raise RuntimeError(f"the step loop has stopped: {self.error!r}") from None

    def attach(self, member: Steppable) -> None:
        self.call(lambda: self._members.setdefault(id(member), (member, _Timing())))

    def detach(self, member: Steppable) -> None:
        self.call(lambda: self._members.pop(id(member), None))

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        self._thread.join(timeout_s)

    # -- the loop thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._steps()
        except BaseException as exc:  # noqa: BLE001 - a bug in the loop itself: every engine is told
            self.error = exc
            log.exception("the step loop crashed")
            for member, _ in list(self._members.values()):
                member.fail(exc)
        finally:
            self._run_calls()

    def _steps(self) -> None:
        while not self._stopping.is_set():
            self.last_heartbeat = self.clock()
            self._run_calls()
            if not self._step_one():
                self._wakeup.wait(self.idle_wait_s)
                self._wakeup.clear()

    def _step_one(self) -> bool:
        """Step the engine due first; False when none has work. (A method of its own, so no local keeps a
        detached engine, and the memory of an unloaded model, alive while the loop idles.)"""
        busy = []
        for member, timing in list(self._members.values()):
            member.apply_commands()
            if member.has_work():
                if timing.last_step_end is None:     # busy for the first time: due from now on
                    timing.last_step_end = self.clock()
                busy.append((member, timing))
        if not busy:
            return False
        member, timing = min(busy, key=lambda mt: self.deadline(*mt))
        start = self.clock()
        try:
            member.step_once()
        except BaseException as exc:  # noqa: BLE001 - one model's crash is reported to its own streams
            member.fail(exc)
            self._members.pop(id(member), None)
            return True
        end = self.clock()
        timing.step_s = end - start if not timing.step_s else 0.8 * timing.step_s + 0.2 * (end - start)
        timing.last_step_end = end
        self.num_steps[id(member)] = self.num_steps.get(id(member), 0) + 1
        return True

    def _run_calls(self) -> None:
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - raised in the caller
                future.set_exception(exc)

    def deadline(self, member: Steppable, timing: _Timing) -> float:
        """When this engine must step next (the algorithm in the module docstring)."""
        scheduler = member.engine.scheduler
        requests = scheduler.running + scheduler.waiting
        new = [r for r in requests if r.num_output_tokens == 0]
        decoding = len(new) < len(requests)
        oldest = min(r.arrival_time for r in new) if new else None
        base = timing.last_step_end if timing.last_step_end is not None else self.clock()
        if not decoding and oldest is not None and oldest > base:
            base = oldest
        if self.policy == "fcfs":
            return base
        slo = member.slo
        ttft = slo.ttft_s if slo.ttft_s is not None else self.default_slo.ttft_s
        tpot = slo.tpot_s if slo.tpot_s is not None else self.default_slo.tpot_s
        first_due = min((r.due_time if r.due_time is not None else r.arrival_time + ttft for r in new), default=None)
        dues = ([base + tpot] if decoding else []) + ([first_due] if first_due is not None else [])
        return max(base, min(dues, default=base) - timing.step_s)
