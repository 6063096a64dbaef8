"""The workload contract: `BenchRequest` (one request to send) and `Workload` (a seeded source of them).

A workload is a small frozen dataclass of its shape (lengths, vocabulary size) with a name and one
method, `requests(rng, num_requests)`, that draws prompts as token ids from a numpy Generator, so the
same seed gives every server the same tokens. Prompt ids are drawn from [MIN_TOKEN_ID, vocab_size):
the special tokens sit at the bottom of the vocabulary and no prompt contains them.

The optional fields of BenchRequest are what later workloads need once a control plane exists;
each plugs in as one more Workload without touching the load generator:
  - W5 routing: W4 with `tenant` set per prefix (sent as the OpenAI `user` field), 2+ replicas behind
    a gateway, `region` for region-aware routing;
  - W7 cold start: `model` names a model with zero replicas, `send_offset_s` spaces the requests out
    so each finds the model scaled to zero again;
  - W8 long tail: `model` drawn from 12+ names with Zipf popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

MIN_TOKEN_ID = 100


@dataclass(frozen=True)
class BenchRequest:
    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    prefix_index: int | None = None      # W4: which shared prefix the prompt starts with
    model: str | None = None             # None: the run's model; else this model (W7, W8)
    tenant: str | None = None            # the OpenAI `user` field (W5 tenants); None: not sent
    region: str | None = None            # where the client is (W5 region routing); not sent yet
    send_offset_s: float | None = None   # a fixed schedule: seconds after the run starts (W6, W7)
    is_warmup: bool = False              # sent before the run and not measured (W5: one per tenant)


class Workload(Protocol):
    """A named, seeded source of requests. `natural_size` is its own request count, if it has one."""

    @property
    def name(self) -> str: ...

    @property
    def natural_size(self) -> int | None: ...

    def requests(self, rng: np.random.Generator, num_requests: int) -> list[BenchRequest]:
        """`num_requests` requests drawn with `rng` (same generator state, same requests)."""


def random_token_ids(rng: np.random.Generator, num_tokens: int, vocab_size: int) -> list[int]:
    return rng.integers(MIN_TOKEN_ID, vocab_size, size=num_tokens).tolist()


def is_scheduled(requests: list[BenchRequest]) -> bool:
    """True when every request carries its own send time; a mix of both is a workload bug."""
    scheduled = [r.send_offset_s is not None for r in requests]
    if any(scheduled) and not all(scheduled):
        raise ValueError("either every request has a send_offset_s or none has")
    return bool(scheduled) and all(scheduled)
