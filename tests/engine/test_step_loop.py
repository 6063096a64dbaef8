"""StepLoop policy: earliest deadline by SLO slack, round robin for fcfs, no starvation, crash isolation."""

import threading
import time
from dataclasses import dataclass, field

from infercloud.engine.step_loop import SLO, StepLoop, _Timing


@dataclass
class FakeRequest:
    arrival_time: float
    num_output_tokens: int = 0
    due_time: float | None = None


@dataclass
class FakeScheduler:
    running: list = field(default_factory=list)
    waiting: list = field(default_factory=list)


@dataclass
class FakeEngine:
    scheduler: FakeScheduler = field(default_factory=FakeScheduler)


class Member:
    """A Steppable with a fake engine: each step appends its name to a shared log."""

    def __init__(self, name: str, slo: SLO, steps_left: int, log: list, step_s: float = 0.0, fail: bool = False):
        self.name, self.slo, self.steps_left, self.log, self.step_s, self.fail_on_step = name, slo, steps_left, log, \
            step_s, fail
        self.engine = FakeEngine(FakeScheduler(running=[FakeRequest(0.0, 1)]))
        self.error = None
        self.go = False

    def apply_commands(self):
        pass

    def has_work(self):
        return self.go and self.steps_left > 0

    def step_once(self):
        if self.fail_on_step:
            raise RuntimeError("boom")
        time.sleep(self.step_s)
        self.steps_left -= 1
        self.log.append(self.name)

    def fail(self, exc):
        self.error = exc


def test_deadline_of_a_decoding_engine_is_its_last_step_plus_tpot_less_its_step_time():
    loop = StepLoop(clock=lambda: 100.0)
    try:
        member = Member("a", SLO(ttft_s=2.0, tpot_s=0.1), 0, [])
        assert loop.deadline(member, _Timing(last_step_end=99.0, step_s=0.03)) == 99.0 + 0.1 - 0.03
        # a request waiting for its first token whose TTFT is due sooner wins over the decode deadline
        member.engine.scheduler.waiting.append(FakeRequest(arrival_time=97.0))
        assert loop.deadline(member, _Timing(last_step_end=99.0, step_s=0.03)) == 99.0   # overdue: not before base
        # an engine without its own targets gets the loop's defaults
        plain = Member("b", SLO(), 0, [])
        assert loop.deadline(plain, _Timing(last_step_end=99.0)) == 99.0 + loop.default_slo.tpot_s
    finally:
        loop.shutdown()


def test_a_request_with_its_own_deadline_makes_its_engine_due_by_it():
    loop = StepLoop(clock=lambda: 50.0)
    try:
        member = Member("a", SLO(ttft_s=1.0, tpot_s=0.1), 0, [])
        member.engine.scheduler.running = []
        member.engine.scheduler.waiting = [FakeRequest(49.5), FakeRequest(49.8, due_time=50.1)]
        assert loop.deadline(member, _Timing(last_step_end=10.0, step_s=0.2)) == 50.1 - 0.2
    finally:
        loop.shutdown()


def test_idle_engine_with_new_requests_is_due_by_their_ttft():
    loop = StepLoop(clock=lambda: 50.0)
    try:
        member = Member("a", SLO(ttft_s=1.0, tpot_s=0.1), 0, [])
        member.engine.scheduler.running = []
        member.engine.scheduler.waiting = [FakeRequest(49.5), FakeRequest(49.8)]
        assert loop.deadline(member, _Timing(last_step_end=10.0, step_s=0.2)) == 49.5 + 1.0 - 0.2
    finally:
        loop.shutdown()


def test_fcfs_deadline_is_the_last_step():
    loop = StepLoop("fcfs", clock=lambda: 100.0)
    try:
        assert loop.deadline(Member("a", SLO(tpot_s=0.01), 0, []), _Timing(last_step_end=42.0)) == 42.0
    finally:
        loop.shutdown()


def run_members(policy: str, members: list[Member]) -> None:
    loop = StepLoop(policy)
    try:
        for m in members:
            loop.attach(m)
        for m in members:
            m.go = True
        loop.wake()
        while any(m.has_work() for m in members if m.error is None):
            time.sleep(0.005)
    finally:
        loop.shutdown()


def test_slo_policy_steps_the_tight_model_more_often_and_fcfs_alternates():
    log: list[str] = []
    tight, loose = Member("tight", SLO(tpot_s=0.02), 40, log, 0.002), Member("loose", SLO(tpot_s=1.0), 40, log, 0.002)
    run_members("slo", [tight, loose])
    first = log[:40]
    assert first.count("tight") >= 30          # the loose model waits while it is far from its target

    log.clear()
    a, b = Member("a", SLO(tpot_s=0.02), 20, log, 0.002), Member("b", SLO(tpot_s=1.0), 20, log, 0.002)
    run_members("fcfs", [a, b])
    assert all(log[i] != log[i + 1] for i in range(3, 38))   # strict alternation once both are busy


def test_a_model_whose_target_cannot_be_met_does_not_starve_the_other():
    log: list[str] = []
    hopeless = Member("hopeless", SLO(tpot_s=0.0001), 60, log, 0.003)   # every step takes longer than its target
    other = Member("other", SLO(tpot_s=0.05), 6, log, 0.001)
    run_members("slo", [hopeless, other])
    assert log.count("other") == 6
    assert log.index("other") < 30


def test_a_crashing_engine_is_dropped_and_the_others_keep_stepping():
    log: list[str] = []
    bad, good = Member("bad", SLO(), 5, log, fail=True), Member("good", SLO(), 10, log)
    run_members("slo", [bad, good])
    assert isinstance(bad.error, RuntimeError)
    assert log == ["good"] * 10


def test_call_runs_on_the_loop_thread_and_returns_or_raises():
    loop = StepLoop()
    try:
        assert loop.call(lambda: threading.current_thread().name) == "engine-step-loop"
        try:
            loop.call(lambda: 1 / 0)
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("the error should reach the caller")
    finally:
        loop.shutdown()


def test_a_detached_engine_is_not_kept_alive_by_the_loop():
    import gc
    import weakref

    loop = StepLoop()
    try:
        member = Member("gone", SLO(), 3, [])
        loop.attach(member)
        member.go = True
        loop.wake()
        while member.has_work():
            time.sleep(0.005)
        loop.detach(member)
        ref = weakref.ref(member)
        del member
        gc.collect()
        assert ref() is None          # its memory (an unloaded model's weights and KV) can be freed
    finally:
        loop.shutdown()
