"""Scores in SQL (written, the last n read back oldest first, a request's scores) and the report over them,
on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from infercloud.evaluation.report import evaluation_report
from infercloud.evaluation.evaluators import JudgeUsage
from infercloud.evaluation.store import ScoreRow, ScoreStore

DAY1, DAY2 = dt.datetime(2026, 11, 1, 10, 0), dt.datetime(2026, 11, 2, 23, 30)


def row(value: float, evaluator: str = "refusal", at: dt.datetime = DAY1, target: str = "chat-a",
        model: str = "chat-a", request_id: str = "r1", passed: bool | None = None,
        usage: JudgeUsage | None = None) -> ScoreRow:
    return ScoreRow(at, target, model, evaluator, value, value >= 0.5 if passed is None else passed, 7, request_id,
                    f"detail {value}", usage=usage)


@pytest.fixture
def store(engine) -> ScoreStore:
    s = ScoreStore(engine)
    s.write([
        row(1.0, at=DAY1, request_id="r1"), row(0.0, at=DAY1 + dt.timedelta(minutes=1), request_id="r2"),
        row(1.0, at=DAY2, request_id="r3"),
        row(0.25, "helpful", at=DAY1, request_id="r1", usage=JudgeUsage(100, 1, 0.5)),      # a judge's scores
        row(0.75, "helpful", at=DAY2, request_id="r3", usage=JudgeUsage(200, 1, 0.25)),
        row(0.5, "groundedness", at=DAY2, target="rag", model="rag", request_id="r4"),
    ])
    return s


def test_rows_are_written_and_read_back(store):
    store.write([])
    (refusal, helpful) = store.for_request("r1")
    assert (refusal.evaluator, refusal.value, refusal.passed, refusal.tenant_id, refusal.at) == ("refusal", 1.0, True,
                                                                                                 7, DAY1)
    assert (helpful.evaluator, helpful.value, helpful.detail) == ("helpful", 0.25, "detail 0.25")
    assert (refusal.usage, helpful.usage) == (None, JudgeUsage(100, 1, 0.5))
    assert refusal.id is not None and helpful.id > refusal.id
    assert store.for_request("nope") == []
    store.write([ScoreRow(DAY1, "chat-a", "m" * 500, "length", 1.0, True, None, "r" * 200, "d" * 1000)])
    (long,) = store.for_request("r" * 80)
    assert (len(long.model), len(long.detail), long.tenant_id) == (200, 300, None)


def test_recent_gives_the_last_n_values_oldest_first(store):
    assert store.recent("chat-a", "refusal", 10) == [1.0, 0.0, 1.0]
    assert store.recent("chat-a", "refusal", 2) == [0.0, 1.0]
    assert store.recent("chat-a", "helpful", 1) == [0.75]
    assert store.recent("rag", "refusal", 5) == []


def test_the_report_groups_by_evaluator_with_count_mean_and_pass_rate(store):
    report = evaluation_report(store.engine, "evaluator")
    none = {"judge_tokens": 0, "judge_device_seconds": 0.0}
    assert report == [
        {"evaluator": "groundedness", "count": 1, "mean_value": 0.5, "pass_rate": 1.0, **none},
        {"evaluator": "helpful", "count": 2, "mean_value": 0.5, "pass_rate": 0.5,       # the judge's cost, summed
         "judge_tokens": 302, "judge_device_seconds": 0.75},
        {"evaluator": "refusal", "count": 3, "mean_value": pytest.approx(2 / 3), "pass_rate": pytest.approx(2 / 3),
         **none},
    ]


def test_the_report_by_day_target_and_model_splits_each_group_by_evaluator(store):
    by_day = evaluation_report(store.engine, "day", target="chat-a")
    assert [(r["day"], r["evaluator"], r["count"], r["mean_value"]) for r in by_day] == [
        ("2026-11-01", "helpful", 1, 0.25), ("2026-11-01", "refusal", 2, 0.5),
        ("2026-11-02", "helpful", 1, 0.75), ("2026-11-02", "refusal", 1, 1.0)]
    by_target = evaluation_report(store.engine, "target")
    assert [(r["target"], r["evaluator"], r["count"]) for r in by_target] == [
        ("chat-a", "helpful", 2), ("chat-a", "refusal", 3), ("rag", "groundedness", 1)]
    by_model = evaluation_report(store.engine, "model", evaluator="refusal")
    assert [(r["model"], r["count"], r["pass_rate"]) for r in by_model] == [("chat-a", 3, pytest.approx(2 / 3))]


def test_the_report_bounds_times_since_inclusive_until_exclusive(store):
    since_day2 = evaluation_report(store.engine, "target", since=DAY2)
    assert sum(r["count"] for r in since_day2) == 3
    until_day2 = evaluation_report(store.engine, "target", until=DAY2)
    assert sum(r["count"] for r in until_day2) == 3
    assert evaluation_report(store.engine, "target", since=DAY2, until=DAY2) == []
    with pytest.raises(ValueError, match="by must be one of"):
        evaluation_report(store.engine, "tenant")
