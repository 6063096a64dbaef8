"""UsageEvent: what one request end (one attempt on one replica) used; the ledger's only input."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from infercloud.config import PriceSpec
from infercloud.store.database import utcnow

OUTCOMES = ("completed", "aborted", "failed", "migrated", "cache_hit")


@dataclass
class UsageEvent:
    """One row of the ledger before pricing.

    A stream that moved to another replica leaves one `migrated` event for the part served by the
    replica that failed and one for the rest, whose prompt tokens are 0 (the client is billed for its
    prompt once; the second prefill is the operator's cost, in its device-seconds). Summed over a
    request's events, the token counts equal the usage the client was told. A `cache_hit` was answered by the
gateway's response cache: its tokens are the ones the client was told, billed at the model's
`cache_hit_per_mtok`, with no device-seconds. `event_id` is made with the
    event and stored with its row (unique): a row retried, spilled or replayed is never billed twice.
    """

    request_id: str
    tenant_id: int
    key_id: int | None
    model: str
    endpoint: str
    tier: str
    outcome: str
    status: int | None = None
    replica: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    device_seconds: float = 0.0
    ttft_s: float | None = None
    e2e_s: float = 0.0
    ended_at: dt.datetime = field(default_factory=utcnow)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the row's identity: written once
    stage: str | None = None          # a pipeline's stage ("rag/generate"): its stages share one request id

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")


def billed_cost(event: UsageEvent, price: PriceSpec) -> float:
    """USD billed for the event's tokens: uncached prompt, cached prompt and completion at their prices (a
    response-cache hit: all its tokens at the cache-hit price)."""
    if event.outcome == "cache_hit":
        return (event.prompt_tokens + event.completion_tokens) * price.cache_hit_per_mtok / 1e6
    uncached = max(event.prompt_tokens - event.cached_tokens, 0)
    cached = min(event.cached_tokens, event.prompt_tokens)
    return (uncached * price.input_per_mtok + cached * price.cached_input_per_mtok
            + event.completion_tokens * price.output_per_mtok) / 1e6


def device_cost(event: UsageEvent, price: PriceSpec) -> float:
    """USD of device time the event took (its attributed device-seconds at the device's hourly price)."""
    return event.device_seconds * price.device_per_hour / 3600


def max_cost(prompt_tokens: int, max_new_tokens: int, price: PriceSpec) -> float:
    """The most a request can be billed: its whole prompt uncached and every allowed token generated."""
    return (prompt_tokens * price.input_per_mtok + max_new_tokens * price.output_per_mtok) / 1e6
