"""Evaluation: sampling on the request path, the scoring task (judge included), SQL rows, metrics and the
degraded state, on a real SQLite database. The judge is a plain coroutine returning a canned chat completion
(the real judge model is exercised end to end through the gateway)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from infercloud.evaluation.service import Evaluation
from infercloud.evaluation.spec import EvaluationSpec, EvaluatorSpec
from infercloud.evaluation.store import ScoreRow, ScoreStore
from infercloud.store.database import open_database
from infercloud.store.schema import eval_scores
from tests.evaluation.factories import AT, chat_answer, make_sample

REFUSAL, LENGTH = EvaluatorSpec("refusal"), EvaluatorSpec("length", max_chars=100)
JUDGE = EvaluatorSpec("judge", name="helpful", model="judge-model", rubric="Correct and brief.")


@pytest.fixture
def engine(tmp_path) -> sa.Engine:
    engine = open_database(f"sqlite:///{tmp_path}/eval.db")
    yield engine
    engine.dispose()


class Judge:
    """A judge that answers `reply` (or raises `error`) and keeps the bodies it was sent."""

    def __init__(self, reply: str = "4", error: Exception | None = None):
        self.reply, self.error, self.bodies = reply, error, []

    async def __call__(self, body: dict) -> dict:
        self.bodies.append(body)
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        return chat_answer(self.reply, model=body["model"])


def evaluation(engine, *evaluators: EvaluatorSpec, judge=None, seed: int = 0, **fields) -> Evaluation:
    service_fields = {k: fields.pop(k) for k in ("queue_size", "clock", "batch_size") if k in fields}
    spec = EvaluationSpec("chat-a", evaluators=evaluators or (REFUSAL,), **{"sample": 1.0, **fields})
    return Evaluation((spec,), engine, judge, random.Random(seed), registry=CollectorRegistry(), **service_fields)


def value(ev: Evaluation, name: str, **labels) -> float:
    return ev.metrics.registry.get_sample_value(name, labels) or 0.0


def rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(eval_scores).order_by(eval_scores.c.id)).all()


def offer_texts(ev: Evaluation, texts: list[str], target: str = "chat-a") -> list[bool]:
    return [ev.offer(target, lambda i=i, t=t: make_sample(t, request_id=f"req-{i}")) for i, t in enumerate(texts)]


def test_at_sample_one_every_offered_answer_is_scored_by_every_evaluator(engine):
    judge = Judge("4")

    async def main() -> Evaluation:
        ev = evaluation(engine, REFUSAL, LENGTH, JUDGE, judge=judge)
        ev.start()
        assert all(offer_texts(ev, [f"Answer number {i}." for i in range(20)]))
        await ev.drain()
        await ev.close()
        return ev

    ev = asyncio.run(main())
    written = rows(engine)
    assert len(written) == 60 and {r.request_id for r in written} == {f"req-{i}" for i in range(20)}
    assert {(r.evaluator, r.value, r.passed) for r in written} == {("refusal", 1.0, True), ("length", 1.0, True),
                                                                   ("helpful", 0.75, True)}
    assert all((r.target, r.model, r.tenant_id, r.at) == ("chat-a", "chat-a", 7, AT) for r in written)
    assert len(judge.bodies) == 20 and judge.bodies[0]["model"] == "judge-model"
    assert judge.bodies[0]["service_tier"] == "batch"
    for name in ("refusal", "length", "helpful"):
        assert value(ev, "infercloud_evaluation_scores_total", target="chat-a", evaluator=name, result="passed") == 20
        assert value(ev, "infercloud_evaluation_score_count", target="chat-a", evaluator=name) == 20
    assert value(ev, "infercloud_evaluation_scores_total", target="chat-a", evaluator="refusal", result="failed") == 0


def test_an_unconfigured_target_is_not_sampled_and_the_sample_is_built_off_the_request_path(engine):
    built = []

    def make():
        built.append(1)
        return make_sample("Fine.")

    async def main() -> None:
        ev = evaluation(engine)
        assert ev.offer("other-model", make) is False
        assert ev.offer("chat-a", make) is True
        assert built == []                 # offer only queues the callable
        ev.start()
        await ev.drain()
        assert built == [1]
        await ev.close()

    asyncio.run(main())
    assert [r.request_id for r in rows(engine)] == ["req-1"]


def test_a_ten_percent_sample_lands_within_four_sigma_of_its_expectation(engine):
    n, share = 2000, 0.1
    made = []

    async def main() -> int:
        ev = evaluation(engine, sample=share, seed=1234, queue_size=n)
        accepted = sum(ev.offer("chat-a", lambda: made.append(1) or make_sample("Fine.")) for _ in range(n))
        ev.start()
        await ev.close()
        return accepted

    accepted = asyncio.run(main())
    sigma = math.sqrt(n * share * (1 - share))
    assert abs(accepted - n * share) <= 4 * sigma
    assert len(made) == accepted and len(rows(engine)) == accepted


def test_a_full_queue_drops_and_counts(engine):
    async def main() -> tuple[Evaluation, list[bool]]:
        ev = evaluation(engine, queue_size=3)
        taken = offer_texts(ev, ["a", "b", "c", "d", "e"])   # not started: nothing leaves the queue
        ev.start()
        await ev.close()
        return ev, taken

    ev, taken = asyncio.run(main())
    assert taken == [True, True, True, False, False]
    assert value(ev, "infercloud_evaluation_dropped_total", target="chat-a", reason="queue_full") == 2
    assert len(rows(engine)) == 3


@pytest.mark.parametrize("judge", [Judge(error=RuntimeError("judge replica down")), Judge("no idea")])
def test_a_failing_judge_is_counted_never_raised_and_the_other_evaluators_still_score(engine, judge):
    async def main() -> Evaluation:
        ev = evaluation(engine, REFUSAL, JUDGE, judge=judge)
        ev.start()
        offer_texts(ev, ["One.", "Two.", "Three."])
        await ev.close()
        return ev

    ev = asyncio.run(main())
    assert value(ev, "infercloud_evaluation_dropped_total", target="chat-a", reason="judge_error") == 3
    assert [r.evaluator for r in rows(engine)] == ["refusal"] * 3


def test_a_sample_that_cannot_be_built_is_counted_and_the_rest_are_scored(engine):
    def broken():
        raise KeyError("choices")

    async def main() -> Evaluation:
        ev = evaluation(engine)
        ev.start()
        ev.offer("chat-a", broken)
        offer_texts(ev, ["Fine."])
        await ev.close()
        return ev

    ev = asyncio.run(main())
    assert value(ev, "infercloud_evaluation_dropped_total", target="chat-a", reason="sample_error") == 1
    assert len(rows(engine)) == 1


def test_degraded_flips_when_the_window_mean_drops_below_the_threshold_and_back(engine):
    now = [dt.datetime(2026, 11, 1, 12, 0)]

    async def main() -> None:
        ev = evaluation(engine, REFUSAL, LENGTH, window=4, degraded_below=0.5, clock=lambda: now[0])

        async def after(*texts: str) -> tuple[dict, float]:
            offer_texts(ev, list(texts))
            await ev.drain()
            return ev.degraded(), value(ev, "infercloud_evaluation_degraded", target="chat-a")

        ev.start()
        assert await after("Fine.", "Fine.", "I can't help with that.") == ({}, 0)   # window not full: no verdict
        assert await after("I cannot do that.") == ({}, 0)                          # [1, 1, 0, 0]: 0.5, not below
        assert await after("I'm sorry, but no.") == ({"chat-a": ["refusal"]}, 1)    # [1, 0, 0, 0]: 0.25
        now[0] += dt.timedelta(hours=1)
        assert await after("Fine.") == ({"chat-a": ["refusal"]}, 1)                 # [0, 0, 0, 1]: still
        (refusal,) = [s for s in ev.status() if s["evaluator"] == "refusal"]
        assert (refusal["scores"], refusal["mean_value"], refusal["degraded_since"]) == (4, 0.25,
                                                                                       "2026-11-01T12:00:00")
        assert await after("Fine.") == ({}, 0)                                     # [0, 0, 1, 1]: recovered
        assert all(not s["degraded"] for s in ev.status())
        await ev.close()

    asyncio.run(main())


def test_close_drains_what_is_queued_and_refuses_later_offers(engine):
    async def main() -> Evaluation:
        ev = evaluation(engine, REFUSAL, LENGTH, batch_size=4)
        offer_texts(ev, [f"Answer {i}." for i in range(10)])
        ev.start()
        await ev.close()
        assert offer_texts(ev, ["Late."]) == [False]
        return ev

    asyncio.run(main())
    assert len(rows(engine)) == 20


def test_the_windows_are_loaded_from_the_store_at_start(engine):
    ScoreStore(engine).write([ScoreRow(AT, "chat-a", "chat-a", "refusal", 0.0, False, None, f"old-{i}", "refusal")
                              for i in range(5)])

    async def main() -> dict:
        ev = evaluation(engine, REFUSAL, window=3, degraded_below=0.5)
        ev.start()
        await ev.drain()
        degraded_at_start = ev.degraded()
        offer_texts(ev, ["Fine.", "Fine."])     # [0, 1, 1]: mean 2/3
        await ev.close()
        return degraded_at_start, ev.degraded()

    at_start, after = asyncio.run(main())
    assert at_start == {"chat-a": ["refusal"]} and after == {}


@pytest.mark.parametrize("kind", ["engine", "function", "coroutine"])
def test_the_engine_is_given_as_itself_a_function_or_a_coroutine(engine, kind):
    async def opened():
        return engine

    provider = {"engine": engine, "function": lambda: engine, "coroutine": opened}[kind]

    async def main() -> None:
        ev = Evaluation((EvaluationSpec("chat-a", sample=1.0, evaluators=(REFUSAL,)),), provider, None,
                        random.Random(0))
        ev.start()
        offer_texts(ev, ["Fine."])
        await ev.close()

    asyncio.run(main())
    assert len(rows(engine)) == 1


def test_a_judge_evaluator_without_a_judge_and_bad_specs_are_refused(engine):
    with pytest.raises(ValueError, match="no judge"):
        evaluation(engine, JUDGE)
    with pytest.raises(ValueError, match="sample"):
        evaluation(engine, sample=0.0)
