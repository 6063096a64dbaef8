"""EvaluationSpec: which answers of a target (a served model or a pipeline) are scored, by which evaluators.

Declared in the config, one per target, in this shape:

    target: rag                      # a served model's name or a pipeline's
    sample: 0.1                      # share of its answers scored (drawn per answer)
    degraded_below: 0.7              # an evaluator's mean over its last `window` scores below this: degraded
    window: 50
    evaluators:
      - {kind: json_schema}                        # requests that asked for JSON: valid, and valid to their schema
      - {kind: tool_call}                          # tool calls name an offered function, with valid arguments
      - {kind: refusal}                            # the answer is not a refusal
      - {kind: length, min_chars: 20, max_chars: 2000}
      - {kind: groundedness}                       # pipeline answers: sentences backed by the passages (lexical)
      - {kind: judge, name: helpful, model: judge-model, rubric: "A good answer is correct and brief."}

Evaluator names (default: the kind) are unique within a target; they label metrics and rows, so only
configured names ever appear there. `check()` holds the range rules; a judge's model is checked against
the served chat models where the config is loaded (it is a name here).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from infercloud.config_loader import SpecFieldError, short_repr

KINDS = ("json_schema", "tool_call", "refusal", "length", "groundedness", "judge")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TARGET_CHARS = 200            # the eval_scores.target column
MAX_WINDOW = 10_000               # scores kept in memory per (target, evaluator)
MAX_JUDGE_TOKENS = 64


def _first_problem(problems: Iterator[tuple[str, str]]) -> None:
    problem = next(problems, None)
    if problem is not None:
        raise SpecFieldError(*problem)


@dataclass(frozen=True)
class EvaluatorSpec:
    kind: str                        # json_schema | tool_call | refusal | length | groundedness | judge
    name: str | None = None          # defaults to kind; unique within a target
    min_chars: int | None = None     # length
    max_chars: int | None = None     # length
    model: str | None = None         # judge: the served chat model that judges
    rubric: str | None = None        # judge: the rubric prompt (what a good answer does)
    max_tokens: int = 8              # judge reply length

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name or self.kind)   # set before the loader compares names

    def check(self) -> None:
        """Raise SpecFieldError naming the first field out of its range."""
        _first_problem(self._problems())

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.kind not in KINDS:
            yield "kind", f"must be one of {', '.join(KINDS)}, got {short_repr(self.kind)}"
        if not (isinstance(self.name, str) and NAME.match(self.name)):
            yield "name", f"must match {NAME.pattern}, got {short_repr(self.name)}"
        for field_name in ("min_chars", "max_chars"):
            value = getattr(self, field_name)
            if value is not None and self.kind != "length":
                yield field_name, "only a length evaluator has one"
            if value is not None and value < 0:
                yield field_name, f"must be 0 or more, got {value}"
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            yield "max_chars", f"must be at least min_chars ({self.min_chars}), got {self.max_chars}"
        if self.kind == "judge" and not self.model:
            yield "model", "a judge evaluator names the served chat model that judges"
        if self.kind == "judge" and not (self.rubric and self.rubric.strip()):
            yield "rubric", "a judge evaluator needs a rubric (what a good answer does)"
        if self.kind != "judge" and (self.model is not None or self.rubric is not None):
            yield "model" if self.model is not None else "rubric", "only a judge evaluator has one"
        if not 1 <= self.max_tokens <= MAX_JUDGE_TOKENS:
            yield "max_tokens", f"must be between 1 and {MAX_JUDGE_TOKENS}, got {self.max_tokens}"


@dataclass(frozen=True)
class EvaluationSpec:
    target: str                      # a served model name or a pipeline name
    sample: float = 0.1              # share of answers scored, 0 < sample <= 1
    evaluators: tuple[EvaluatorSpec, ...] = ()
    degraded_below: float | None = None   # mean score of an evaluator's last `window` scores below this: degraded
    window: int = 50

    def check(self) -> None:
        """Raise SpecFieldError naming the first field out of its range (its evaluators' fields included)."""
        _first_problem(self._problems())
        for i, evaluator in enumerate(self.evaluators):
            try:
                evaluator.check()
            except SpecFieldError as exc:
                raise SpecFieldError(f"evaluators[{i}].{exc.field}", exc.rule) from None

    def _problems(self) -> Iterator[tuple[str, str]]:
        if not (isinstance(self.target, str) and 1 <= len(self.target) <= MAX_TARGET_CHARS
                and self.target.isprintable()):
            yield "target", f"must be 1 to {MAX_TARGET_CHARS} printable characters, got {short_repr(self.target)}"
        if not 0 < self.sample <= 1:
            yield "sample", f"must be more than 0 and at most 1, got {self.sample}"
        if not self.evaluators:
            yield "evaluators", "name at least one evaluator"
        names = [e.name for e in self.evaluators]
        repeated = sorted({n for n in names if names.count(n) > 1}, key=str)
        if repeated:
            yield "evaluators", f"names must be unique within a target ({short_repr(repeated[0])} is given twice)"
        if self.degraded_below is not None and not 0 <= self.degraded_below <= 1:
            yield "degraded_below", f"must be between 0 and 1, got {self.degraded_below}"
        if not 1 <= self.window <= MAX_WINDOW:
            yield "window", f"must be between 1 and {MAX_WINDOW}, got {self.window}"

    def evaluator(self, name: str) -> EvaluatorSpec | None:
        return next((e for e in self.evaluators if e.name == name), None)


def check_targets(specs: tuple[EvaluationSpec, ...]) -> None:
    """The rule across specs: one spec per target (SpecFieldError naming `target` otherwise)."""
    seen: set[str] = set()
    for spec in specs:
        if spec.target in seen:
            raise SpecFieldError("target", f"{short_repr(spec.target)} has more than one evaluation")
        seen.add(spec.target)
