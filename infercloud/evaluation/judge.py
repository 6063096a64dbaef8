"""The judge evaluator: a served chat model grades an answer 1-5 against a rubric.

`judge_body` is the chat completion request sent to the judge model: a system message with the rubric
and the grading rule (one digit, 1 = poor to 5 = excellent, nothing else), a user message with the
question (the last user message, or a completion's prompt) and the answer (its text, or its tool calls
written as `name(arguments)`), each cut to MAX_JUDGED_CHARS. Greedy (temperature 0), `max_tokens` from
the spec, at the lowest tier (`service_tier: "batch"`, config.TIERS) so judging never slows live traffic,
and constrained to a grade (`response_format`: a JSON integer among 1-5), so a small judge model cannot
answer anything else.

`parse_verdict` reads the judge's reply: the first digit 1-5 standing alone (not part of a longer
number) is the grade d; the score is (d - 1) / 4, passed at 0.5 or more (a 3). No such digit: None. The
score carries what the call used (its answer's tokens and device-seconds): kept with the score in SQL and
summed by the report, the operator's cost of judging (no tenant is billed for it).
"""

from __future__ import annotations

import re

from infercloud.evaluation.evaluators import JudgeUsage, Score
from infercloud.evaluation.sample import Sample, question_text
from infercloud.evaluation.spec import EvaluatorSpec

JUDGE_TIER = "batch"
MAX_JUDGED_CHARS = 8000
GRADING = ("Grade the answer below to the user's question from 1 (poor) to 5 (excellent). "
           "Reply with a single digit from 1 to 5 and nothing else.")
GRADE_FORMAT = {"type": "json_schema", "json_schema": {"name": "grade", "strict": True,
                                                      "schema": {"type": "integer", "enum": [1, 2, 3, 4, 5]}}}
_GRADE = re.compile(r"(?<![0-9])[1-5](?![0-9])")


def judge_body(spec: EvaluatorSpec, sample: Sample) -> dict:
    """The chat completion body asking `spec.model` to grade `sample` against `spec.rubric`."""
    answer = sample.text or "\n".join(f"{name}({arguments})" for name, arguments in sample.tool_calls)
    question = question_text(sample.request)
    user = (f"Question:\n{_cut(question)}\n\nAnswer:\n{_cut(answer)}\n\n"
            "Grade (a single digit from 1 to 5):")
    return {"model": spec.model,
            "messages": [{"role": "system", "content": f"{(spec.rubric or '').strip()}\n\n{GRADING}"},
                         {"role": "user", "content": user}],
            "temperature": 0, "max_tokens": spec.max_tokens, "service_tier": JUDGE_TIER, "stream": False,
            "response_format": GRADE_FORMAT}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_JUDGED_CHARS else text[:MAX_JUDGED_CHARS] + " [...]"


def parse_verdict(answer_json: dict, evaluator: str = "judge") -> Score | None:
    """The judge's grade as a Score named `evaluator`; None when its reply holds no grade."""
    choices = answer_json.get("choices") if isinstance(answer_json, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    reply = message.get("content") if message else choice.get("text")
    found = _GRADE.search(reply) if isinstance(reply, str) else None
    if found is None:
        return None
    grade = int(found.group())
    value = (grade - 1) / 4
    model, tier = answer_json.get("model"), answer_json.get("service_tier")
    by = (f" by {str(model)[:100]}" if model else "") + (f" at tier {str(tier)[:20]}" if tier else "")
    return Score(evaluator, value, value >= 0.5, f"graded {grade} of 5{by}", _usage(answer_json.get("usage")))


def _usage(usage: object) -> JudgeUsage | None:
    """The judge's tokens and device-seconds from its answer's `usage` (None when it has none)."""
    if not isinstance(usage, dict):
        return None
    try:
        return JudgeUsage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                          float(usage.get("device_seconds") or 0.0))
    except (TypeError, ValueError):
        return None
