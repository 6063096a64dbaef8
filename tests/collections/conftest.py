"""Fixtures: `database_url` and `engine` (SQLite, and PostgreSQL where INFERCLOUD_TEST_POSTGRES_URL is set), and a
fake Embed (hashed bag of words: texts sharing words are close) for tests that need no model."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from infercloud.collections.embed import CallContext, Embedded
from infercloud.openai.errors import APIError
from tests.tenancy.db_fixture import database_url, engine  # noqa: F401

DIM = 256


def bag_of_words(text: str, dim: int = DIM) -> np.ndarray:
    vector = np.zeros(dim, np.float32)
    for word in re.findall(r"\w+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % dim] += 1.0
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class FakeEmbed:
    """An Embed: one call per batch recorded; a text of more than `max_words` words is refused the way
    infercloud's embedding service refuses an input longer than the model's limit (2 tokens a word)."""

    def __init__(self, max_words: int | None = None):
        self.max_words = max_words
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, ctx: CallContext, model: str, texts: list[str]) -> Embedded:
        self.calls.append((model, list(texts)))
        for i, text in enumerate(texts):
            words = len(text.split())
            if self.max_words is not None and words > self.max_words:
                raise APIError(400, f"Input {i} has {2 * words} tokens, more than this model's limit of "
                               f"{2 * self.max_words} tokens per input (counting [CLS] and [SEP]).", param="input")
        tokens = sum(len(t.split()) for t in texts)
        return Embedded(np.stack([bag_of_words(t) for t in texts]), tokens)


@pytest.fixture
def fake_embed() -> FakeEmbed:
    return FakeEmbed()
