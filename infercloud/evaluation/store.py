"""ScoreStore: evaluation scores in SQL (the `eval_scores` table of the gateway's database), and reads of them.

`write` inserts rows in one transaction; `recent` gives an evaluator's last n values of a target, oldest
first (the service's start-up window); `for_request` every score of one request. Grouped reads are
report.py's. Calls block: the service runs them in a thread.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from infercloud.evaluation.evaluators import MAX_DETAIL, JudgeUsage, Score
from infercloud.evaluation.sample import Sample
from infercloud.store.schema import eval_scores

MAX_MODEL_CHARS = 200
MAX_REQUEST_ID_CHARS = 80


@dataclass(frozen=True)
class ScoreRow:
    at: dt.datetime             # when the answer was given (naive UTC)
    target: str
    model: str
    evaluator: str
    value: float
    passed: bool
    tenant_id: int | None
    request_id: str
    detail: str
    id: int | None = None       # set when read back
    usage: JudgeUsage | None = None   # a judge's score: what its call used

    @classmethod
    def of(cls, sample: Sample, score: Score) -> ScoreRow:
        return cls(sample.at, sample.target, sample.model, score.evaluator, score.value, score.passed,
                   sample.tenant_id, sample.request_id, score.detail, usage=score.usage)

    def values(self) -> dict:
        u = self.usage
        return {"at": self.at, "target": self.target, "model": self.model[:MAX_MODEL_CHARS],
                "evaluator": self.evaluator, "value": float(self.value), "passed": bool(self.passed),
                "tenant_id": self.tenant_id, "request_id": self.request_id[:MAX_REQUEST_ID_CHARS],
                "detail": self.detail[:MAX_DETAIL],
                "judge_prompt_tokens": u.prompt_tokens if u else None,
                "judge_completion_tokens": u.completion_tokens if u else None,
                "judge_device_seconds": u.device_seconds if u else None}


class ScoreStore:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def write(self, rows: list[ScoreRow]) -> None:
        """The rows in one transaction."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(eval_scores.insert(), [row.values() for row in rows])

    def recent(self, target: str, evaluator: str, n: int) -> list[float]:
        """The last `n` values of `evaluator` on `target`, oldest first."""
        query = (sa.select(eval_scores.c.value)
                 .where(eval_scores.c.target == target, eval_scores.c.evaluator == evaluator)
                 .order_by(eval_scores.c.at.desc(), eval_scores.c.id.desc()).limit(n))
        with self.engine.connect() as conn:
            return [float(v) for v in conn.execute(query).scalars()][::-1]

    def for_request(self, request_id: str) -> list[ScoreRow]:
        """Every score of one request, in the order written."""
        query = sa.select(eval_scores).where(eval_scores.c.request_id == request_id).order_by(eval_scores.c.id)
        with self.engine.connect() as conn:
            return [ScoreRow(r.at, r.target, r.model, r.evaluator, float(r.value), bool(r.passed), r.tenant_id,
                             r.request_id, r.detail, r.id, _usage(r)) for r in conn.execute(query)]


def _usage(r) -> JudgeUsage | None:
    if r.judge_prompt_tokens is None:
        return None
    return JudgeUsage(r.judge_prompt_tokens, r.judge_completion_tokens or 0, r.judge_device_seconds or 0.0)
