"""Checks of a pipeline's answer: pure functions of the answer text (and, for groundedness, of vectors).

- json_schema: the answer parses as JSON and validates against the schema (jsonschema, Draft 2020-12).
- regex: `re.search(pattern, answer)` finds a match.
- groundedness: the answer is cut into sentences; a sentence is supported when its embedding's cosine
  similarity to some retrieved passage's embedding is at least `threshold`; the answer passes when every
  sentence is supported (an empty answer has nothing to support and passes vacuously, saying so).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import jsonschema
import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_SENTENCE_CHARS = 3


@dataclass(frozen=True)
class CheckResult:
    rule: str
    passed: bool
    reason: str
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rule": self.rule, "passed": self.passed, "reason": self.reason, **self.detail}


def check_json_schema(answer: str, schema: dict) -> CheckResult:
    try:
        value = json.loads(answer)
    except ValueError as exc:
        return CheckResult("json_schema", False, f"not JSON: {exc.msg} at character {exc.pos}")
    try:
        jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(root)"
        return CheckResult("json_schema", False, f"{where}: {exc.message[:200]}")
    return CheckResult("json_schema", True, "valid")


def check_regex(answer: str, pattern: str) -> CheckResult:
    found = re.search(pattern, answer)
    return CheckResult("regex", found is not None, "matched" if found else "no match")


def sentences(answer: str) -> list[str]:
    """The answer's sentences: cut after . ! ? and at line ends; fragments shorter than 3 characters dropped."""
    return [s.strip() for s in _SENTENCE_END.split(answer) if len(s.strip()) >= MIN_SENTENCE_CHARS]


def check_groundedness(parts: list[str], part_vectors: np.ndarray, passage_vectors: np.ndarray,
                       threshold: float) -> CheckResult:
    """`parts`: the answer's sentences and their unit vectors; `passage_vectors`: the retrieved passages'."""
    if not parts:
        return CheckResult("groundedness", True, "no sentences to support", {"sentences": []})
    if passage_vectors.size == 0:
        best = np.zeros(len(parts), dtype=np.float32)
    else:
        best = (part_vectors @ passage_vectors.T).max(axis=1)
    supported = best >= threshold
    detail = {"threshold": threshold, "supported": int(supported.sum()), "num_sentences": len(parts),
              "sentences": [{"text": p[:200], "similarity": round(float(b), 4), "supported": bool(s)}
                            for p, b, s in zip(parts, best, supported)]}
    passed = bool(supported.all())
    reason = "every sentence is supported" if passed else \
        f"{int((~supported).sum())} of {len(parts)} sentences below {threshold} similarity to every passage"
    return CheckResult("groundedness", passed, reason, detail)
