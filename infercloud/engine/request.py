"""Request: one sequence inside the engine (its tokens, progress, KV hashes, generator and stop state)."""

from __future__ import annotations

import enum
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import torch

from infercloud.engine.sampling import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    STOP = "stop"      # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the context window
    ABORT = "abort"    # cancelled by the client or the server


@dataclass
class TokenLogprob:
    """Logprob of a sampled token and the top alternatives at that position (from the raw model output)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class RequestMetrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    num_preemptions: int = 0
    device_seconds: float = 0.0  # this request's share (by tokens) of every step it took part in
    # each step that computed its prompt (a chunk; again after a preemption): (start, end, tokens)
    prefill_chunks: list[tuple[float, float, int]] = field(default_factory=list)
    token_gaps: array = field(default_factory=lambda: array("d"))  # between its sampled tokens, in order
    last_token_time: float | None = None
    detokenize_s: float = 0.0    # the detokenizer's time on its tokens (a little in each step)


@dataclass(eq=False)
class Request:
    """One sequence: prompt + generated tokens. With n > 1 the engine makes n of these per client request.

    `num_computed_tokens` counts tokens whose KV is in the cache; the request needs a forward pass over
    `all_token_ids[num_computed_tokens:]` before it can sample its next token.
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    generator: torch.Generator
    parent_id: str
    index: int = 0
    priority: int = 0                     # vLLM's convention: lower is served first (the gateway's tier)
    cache_salt: str | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    due_time: float | None = None         # when its first token is due (engine clock): arrival + its deadline, or
                                          # + the model's TTFT target; None (unit tests' requests): its arrival
    output_token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    block_hashes: list[bytes] = field(default_factory=list)
    metrics: RequestMetrics | None = None
    grammar: Any = None          # an xgrammar GrammarMatcher when the output is constrained (structured/)

    def __post_init__(self) -> None:
        self.all_token_ids = list(self.prompt_token_ids)
        if self.metrics is None:
            self.metrics = RequestMetrics(arrival_time=self.arrival_time)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status == RequestStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self.all_token_ids.append(token_id)
