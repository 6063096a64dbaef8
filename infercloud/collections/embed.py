"""Embed: how collections, pipelines and the semantic cache turn texts into vectors, through the server's own
embeddings endpoint (on a gateway: its handling of /v1/embeddings with the caller's key, limits and metering;
on a single box: the embedding model's service in-process). `embedded_from` reads that endpoint's answer."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from infercloud.openai.errors import error_from_answer


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


def embeddings_body(model: str, texts: list[str]) -> dict:
    """The /v1/embeddings body an Embed sends: base64 floats (4x less to encode and parse than JSON numbers)."""
    return {"model": model, "input": texts, "encoding_format": "base64"}


def embedded_from(response: Response) -> Embedded:
    """The vectors of an /v1/embeddings answer, each scaled to unit length; an error answer is raised as the
    same OpenAI error (its status, type, code and message)."""
    body = json.loads(bytes(response.body))
    if response.status_code != 200:
        raise error_from_answer(response.status_code, body, "The embedding model failed.")
    rows = sorted(body["data"], key=lambda d: d["index"])
    vectors = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype=np.float32) for d in rows]) \
        if rows else np.zeros((0, 0), np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True) if rows else 1.0
    return Embedded(np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32),
                    int(body["usage"]["prompt_tokens"]))
