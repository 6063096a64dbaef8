"""What the engine returns each step: per client request, the new tokens/text of each of its n sequences."""

from __future__ import annotations

from dataclasses import dataclass, field

from infercloud.engine.request import RequestMetrics, TokenLogprob


@dataclass
class CompletionOutput:
    """One of a request's n sequences: cumulative text/tokens and what is new since the last output."""

    index: int
    text: str
    token_ids: list[int]
    delta_text: str
    delta_token_ids: list[int]
    delta_logprobs: list[TokenLogprob] | None
    finish_reason: str | None = None
    stop_reason: str | int | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """Changes of one client request in one step; `outputs` holds only sequences that changed."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0
    metrics: list[RequestMetrics] = field(default_factory=list)
