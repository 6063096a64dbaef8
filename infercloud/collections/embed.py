"""Embed: how collections, pipelines and the semantic cache turn texts into vectors, through the server's own
embeddings endpoint (on a gateway: its handling of /v1/embeddings with the caller's key, limits and metering;
on a single box: the embedding model's service in-process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray          # float32 [len(texts), dim], each row of unit length
    prompt_tokens: int           # what the embedding model read (billed as its usage)


@dataclass(frozen=True)
class CallContext:
    """Who a call is made for: the client's request (its key), the request id every stage's usage is booked
    under, and the stage name the ledger records (None: not part of a pipeline)."""

    request: Request
    request_id: str | None = None
    stage: str | None = None


Embed = Callable[[CallContext, str, list[str]], Awaitable[Embedded]]   # (context, model, texts) -> vectors
