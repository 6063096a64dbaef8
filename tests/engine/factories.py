"""Test factories: `make_request(...)` builds an engine Request without a tokenizer or a model."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch

from infercloud.engine.request import Request
from infercloud.engine.sampling import SamplingParams


def distinct_tokens(request_id: str, num_tokens: int) -> list[int]:
    """Token ids that no other request id shares (so requests built from a count share no prefix)."""
    base = (zlib.crc32(request_id.encode()) % 100_000) * 10_000 + 1_000_000
    return [base + i for i in range(num_tokens)]


def make_request(request_id: str, tokens: int | Sequence[int], *, priority: int = 0, max_tokens: int = 16,
                 cache_salt: str | None = None, arrival_time: float = 0.0, seed: int = 0,
                 due_time: float | None = None) -> Request:
    """A Request of `tokens` prompt tokens (a count: ids unique to this request; a list: those ids).

    `arrival_time` defaults to 0.0: tests that care about FCFS order pass it explicitly.
    """
    token_ids = distinct_tokens(request_id, tokens) if isinstance(tokens, int) else list(tokens)
    return Request(request_id=request_id, prompt_token_ids=token_ids,
                   params=SamplingParams(max_tokens=max_tokens),
                   generator=torch.Generator(device="cpu").manual_seed(seed),
                   parent_id=request_id, priority=priority, cache_salt=cache_salt, arrival_time=arrival_time,
                   due_time=due_time)
