"""Factories for the cache tests: request bodies, replies (as a worker answers), a fake embedder; Redis
fixtures (`redis_url`, `own_redis`) as the tenancy tests have them."""

from __future__ import annotations

import numpy as np

from infercloud.cache.store import CachedReply
from tests.tenancy.fakes import FakeClock  # noqa: F401
from tests.tenancy.redis_fixture import own_redis, redis_url  # noqa: F401

MODEL = "smollm2-135m-instruct"


def chat_body(question: str = "What is the capital of France?", history: list[dict] | None = None,
              **fields) -> dict:
    """A deterministic chat request (temperature 0) ending in a user turn."""
    messages = [{"role": "system", "content": "You are terse."}, *(history or []),
                {"role": "user", "content": question}]
    return {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 64, **fields}


def chat_reply(text: str = "Paris is the capital of France.", tool_calls: list[dict] | None = None,
               finish_reason: str = "stop", created_at: float = 1000.0) -> CachedReply:
    message: dict = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body = {"id": "chatcmpl-original", "object": "chat.completion", "created": 1700000000, "model": MODEL,
            "service_tier": "default",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29,
                      "prompt_tokens_details": {"cached_tokens": 0}, "device_seconds": 0.042}}
    return CachedReply(body, created_at)


def text_reply(text: str = " a lazy dog.", created_at: float = 1000.0) -> CachedReply:
    body = {"id": "cmpl-original", "object": "text_completion", "created": 1700000000, "model": MODEL,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}}
    return CachedReply(body, created_at)


def axis(i: int, dim: int = 8, tilt: float = 0.0) -> np.ndarray:
    """Unit vector near axis i: `tilt` of the next axis mixed in (cosine to the axis is 1/sqrt(1+tilt^2))."""
    v = np.zeros(dim, np.float32)
    v[i] = 1.0
    v[(i + 1) % dim] = tilt
    return v / np.linalg.norm(v)


class FakeEmbedder:
    """texts -> unit vectors from a table (unknown texts: the last axis); counts its calls."""

    def __init__(self, table: dict[str, np.ndarray], dim: int = 8, fails: bool = False):
        self.table = table
        self.dim = dim
        self.fails = fails
        self.calls: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fails:
            raise RuntimeError("embedding model unavailable")
        return np.stack([self.table.get(t, axis(self.dim - 1, self.dim)) for t in texts])
