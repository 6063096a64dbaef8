"""The evaluation report: scores grouped by model, evaluator, day or target, with their count, mean and pass rate.

Scores of different evaluators do not mix (a mean of refusal and length scores says nothing), so every
group is split by evaluator too: `by="model"` gives one row per (model, evaluator), `by="evaluator"`
one per evaluator. Days are UTC dates of the answers (`date(at)`: the same on SQLite and PostgreSQL);
`since` and `until` bound the answers' times (naive UTC, since inclusive, until exclusive).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from infercloud.store.schema import eval_scores

GROUPS = ("model", "evaluator", "day", "target")


def evaluation_report(engine: sa.Engine, by: str = "evaluator", target: str | None = None,
                      since: dt.datetime | None = None, until: dt.datetime | None = None,
                      evaluator: str | None = None) -> list[dict]:
    """One dict per group: {by: key, "evaluator", "count", "mean_value", "pass_rate", "judge_tokens",
    "judge_device_seconds"} (the last two: what a judge's calls used, the operator's cost; 0 for other
    evaluators), ordered by key."""
    if by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}, got {by!r}")
    t = eval_scores.c
    key = {"model": t.model, "evaluator": t.evaluator, "day": sa.func.date(t.at), "target": t.target}[by]
    keys = [key.label("key")] if by == "evaluator" else [key.label("key"), t.evaluator.label("evaluator")]
    query = sa.select(
        *keys,
        sa.func.count().label("count"),
        sa.func.avg(t.value).label("mean_value"),
        sa.func.sum(sa.case((t.passed, 1), else_=0)).label("passed"),
        sa.func.coalesce(sa.func.sum(t.judge_prompt_tokens + t.judge_completion_tokens), 0).label("judge_tokens"),
        sa.func.coalesce(sa.func.sum(t.judge_device_seconds), 0.0).label("judge_device_seconds"),
    ).group_by(*(k.element for k in keys)).order_by(*(k.element for k in keys))
    for column, value in ((t.target, target), (t.evaluator, evaluator)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(t.at >= since)
    if until is not None:
        query = query.where(t.at < until)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [{by: str(r.key), "evaluator": str(r.key if by == "evaluator" else r.evaluator), "count": int(r.count),
             "mean_value": float(r.mean_value), "pass_rate": int(r.passed) / int(r.count),
             "judge_tokens": int(r.judge_tokens), "judge_device_seconds": round(float(r.judge_device_seconds), 6)}
            for r in rows]
