"""PipelineSpec: a named pipeline of stages (embed, retrieve, rerank, generate, check) under one end-to-end SLO.

A pipeline is declared in the config (`pipelines:`) or through the admin API (`POST /admin/pipelines`), in
the same shape:

    name: rag
    slo_s: 10                         # the end-to-end deadline: every stage gets what remains of it
    stages:
      - {kind: embed}                                 # the question's vector (the first embedding model)
      - {kind: retrieve, collection: docs, top_k: 8}  # the caller's own collection named `docs`
      - {kind: rerank, top_k: 3, budget_s: 2, on_budget: skip}
      - {kind: generate, max_tokens: 128}             # the first chat model, passages placed by `template`
      - {kind: check, rule: groundedness, threshold: 0.5}

Order: an embed stage comes before retrieve, retrieve before rerank, at most one generate, checks after
it. `budget_s` caps a stage (with what remains of the SLO: the smaller wins); `on_budget` says what a
stage that runs out does: `fail` (the request fails, 504) or `skip` (the pipeline goes on without it:
rerank keeps the retrieval order, a check is not made; embed, retrieve and generate cannot be skipped
usefully, so they fail). Model names are checked against the served models when the config loads.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

from infercloud.config_loader import SpecFieldError, short_repr

StageKind = Literal["embed", "retrieve", "rerank", "generate", "check"]
RerankMethod = Literal["auto", "cross_encoder", "llm", "embedding"]
CheckRule = Literal["json_schema", "regex", "groundedness"]
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_TEMPLATE = (
    "Answer the question using only the passages below. If they do not contain the answer, say so.\n\n"
    "{passages}")
SKIPPABLE = ("rerank", "check")


def _require(ok: bool, field_name: str, rule: str) -> None:
    if not ok:
        raise SpecFieldError(field_name, rule)


@dataclass(frozen=True)
class StageSpec:
    kind: StageKind
    name: str | None = None                  # default: the kind (names are unique within a pipeline)
    budget_s: float | None = None            # None: only the end-to-end deadline bounds it
    on_budget: Literal["skip", "fail"] = "fail"
    model: str | None = None                 # embed/check: an embedding model; rerank (llm)/generate: a chat model
    collection: str | None = None            # retrieve: the caller's collection of this name
    filter: dict[str, Any] | None = None     # retrieve: metadata equality ({"field": value | {"$in": [...]}})
    top_k: int = 5                           # retrieve: passages found; rerank: passages kept
    method: RerankMethod = "auto"            # rerank: auto = cross-encoder where installed, else llm, else embedding
    template: str = DEFAULT_TEMPLATE         # generate: the system message; {passages} is replaced
    max_tokens: int = 256                    # generate
    temperature: float | None = None         # generate: default the request's, else the model's
    rule: CheckRule | None = None            # check
    schema: dict[str, Any] | None = None     # check json_schema: the answer must parse and validate
    pattern: str | None = None               # check regex: re.search must match the answer
    threshold: float = 0.5                   # check groundedness: a sentence's best passage similarity at least

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name or self.kind)
        _require(bool(NAME.match(self.name)), "name", f"must match {NAME.pattern}, got {short_repr(self.name)}")
        _require(self.budget_s is None or self.budget_s > 0, "budget_s", "must be positive")
        _require(self.on_budget == "fail" or self.kind in SKIPPABLE, "on_budget",
                 f"a {self.kind} stage cannot be skipped (only {' and '.join(SKIPPABLE)} stages)")
        _require(1 <= self.top_k <= 100, "top_k", "must be between 1 and 100")
        _require(self.kind != "retrieve" or bool(self.collection), "collection", "a retrieve stage names one")
        _require(self.max_tokens >= 1, "max_tokens", "must be at least 1")
        _require(self.kind != "generate" or "{passages}" in self.template, "template", "must contain {passages}")
        _require(self.kind != "check" or self.rule is not None, "rule",
                 "a check stage needs one: json_schema, regex or groundedness")
        _require(self.rule != "json_schema" or self.schema is not None, "schema", "a json_schema check needs one")
        _require(self.rule != "regex" or self.pattern is not None, "pattern", "a regex check needs one")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise SpecFieldError("pattern", f"not a valid regular expression: {exc}") from None
        _require(0 < self.threshold <= 1, "threshold", "must be in (0, 1]")


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    stages: tuple[StageSpec, ...]
    slo_s: float = 10.0                      # end-to-end deadline, from arrival
    deadline_ordering: bool = True           # the generate stage tells the engine when its first token is due
    description: str | None = None

    def __post_init__(self) -> None:
        _require(bool(NAME.match(self.name)), "name", f"must match {NAME.pattern}, got {short_repr(self.name)}")
        _require(self.slo_s > 0, "slo_s", "must be positive")
        _require(bool(self.stages), "stages", "a pipeline has at least one stage")
        kinds = self.kinds
        names = [s.name for s in self.stages]
        _require(len(set(names)) == len(names), "stages", "stage names must be unique (name repeated kinds)")
        _require(kinds.count("generate") <= 1, "stages", "at most one generate stage")
        for i, kind in enumerate(kinds):
            before = kinds[:i]
            _require(kind != "retrieve" or "embed" in before, "stages", "a retrieve stage needs an embed stage before it")
            _require(kind != "rerank" or "retrieve" in before, "stages", "a rerank stage needs a retrieve stage before it")
            _require(kind != "check" or "generate" in before, "stages", "a check stage comes after the generate stage")
            _require(kind != "embed" or "retrieve" not in before, "stages", "embed comes before retrieve")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(s.kind for s in self.stages)

    def stage(self, kind: str) -> StageSpec | None:
        return next((s for s in self.stages if s.kind == kind), None)

    @property
    def retrieves(self) -> bool:
        return "retrieve" in self.kinds

    def with_models(self, chat: str | None, embedding: str | None) -> PipelineSpec:
        """The spec with each stage's model set where it names none: `chat` for rerank and generate, `embedding`
        for embed and check (the server's first models of each kind)."""
        stages = []
        for s in self.stages:
            default = None if s.kind == "retrieve" else chat if s.kind in ("rerank", "generate") else embedding
            stages.append(s if s.model is not None else dataclasses.replace(s, model=default))
        return dataclasses.replace(self, stages=tuple(stages))


def resolve(spec: PipelineSpec, kinds: dict[str, str]) -> PipelineSpec:
    """The spec with its stages' models settled against the served models (`kinds`: name -> chat | embedding,
    in the config's order): defaults filled, each stage's model of the kind it needs. Raises ValueError."""
    chat = next((n for n, k in kinds.items() if k == "chat"), None)
    embedding = next((n for n, k in kinds.items() if k == "embedding"), None)
    _require(spec.name not in kinds, "name", f"{spec.name!r} is a served model's name")
    spec = spec.with_models(chat, embedding)
    for i, stage in enumerate(spec.stages):
        needs = "chat" if stage.kind in ("rerank", "generate") else "embedding"
        if stage.kind in ("retrieve",) or (stage.kind == "check" and stage.rule != "groundedness"):
            continue
        if stage.kind == "rerank" and stage.method == "embedding":
            continue
        _require(stage.model is not None and kinds.get(stage.model) == needs, f"stages[{i}].model",
                 f"a {stage.kind} stage needs a served {needs} model, got {short_repr(stage.model)}")
    return spec
