"""SamplingParams: what one request asks of the sampler and the stop logic, validated on creation."""

from __future__ import annotations

from dataclasses import dataclass, field

from infercloud.engine.structured.spec import StructuredSpec


class InvalidParamError(ValueError):
    """A request parameter has an invalid value; `param` names it (for a 400 with `param` set)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


MAX_LOGPROBS = 20


@dataclass
class SamplingParams:
    """Per-request sampling and stopping controls (the OpenAI fields plus vLLM's extras).

    `top_k=None` and `top_p=1.0` and `min_p=0.0` disable those filters; `temperature=0` is greedy.
    `logprobs=None` returns none; `logprobs=k` returns the sampled token's logprob and the top k (from the
    raw logits: before logit_bias, the grammar mask and the filters).
    """

    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    n: int = 1
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None    # token id -> added to its logit, in [-100, 100]
    structured: StructuredSpec | None = None      # the output must match this grammar

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in self.stop if s]
        self.stop_token_ids = list(self.stop_token_ids)
        if self.top_k is not None and self.top_k <= 0:  # OpenAI-style clients send -1/0 for "off"
            self.top_k = None
        self._validate()

    def _validate(self) -> None:
        checks = [
            ("max_tokens", self.max_tokens >= 1, "must be at least 1"),
            ("min_tokens", 0 <= self.min_tokens <= self.max_tokens, "must be between 0 and max_tokens"),
            ("temperature", 0.0 <= self.temperature <= 2.0, "must be between 0 and 2"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "must be in [0, 1]"),
            ("presence_penalty", -2.0 <= self.presence_penalty <= 2.0, "must be between -2 and 2"),
            ("frequency_penalty", -2.0 <= self.frequency_penalty <= 2.0, "must be between -2 and 2"),
            ("repetition_penalty", 0.0 < self.repetition_penalty <= 2.0, "must be in (0, 2]"),
            ("n", 1 <= self.n <= 16, "must be between 1 and 16"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
             f"must be between 0 and {MAX_LOGPROBS}"),
            ("stop", len(self.stop) <= 16, "at most 16 stop sequences"),
            ("logit_bias", all(-100 <= v <= 100 for v in (self.logit_bias or {}).values()),
             "values must be between -100 and 100"),
        ]
        for param, ok, rule in checks:
            if not ok:
                raise InvalidParamError(param, f"{param} {rule} (got {getattr(self, param)!r})")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return (self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
                or self.repetition_penalty != 1.0)
