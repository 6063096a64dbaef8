"""The semantic threshold on the real all-MiniLM-L6-v2 (in-process): paraphrases of a question score at or
above DEFAULT_THRESHOLD and hit; different questions, even close ones, score below it and miss; the same
question after another history misses. The similarities measured are in docs/caching.md."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from infercloud.cache.response_cache import CacheRequest, ResponseCache
from infercloud.cache.spec import (
    DEFAULT_THRESHOLD,
    CacheSpec,
    SemanticCacheSpec,
    SemanticModelSpec,
)
from infercloud.engine.embedding_engine import EmbeddingEngine
from infercloud.models.pull import pull
from tests.cache.conftest import MODEL, chat_body, chat_reply

PARAPHRASES = [   # (question, a paraphrase): measured 0.94 to 0.99
    ("What is the capital of France?", "What's the capital city of France?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("How tall is Mount Everest?", "What is the height of Mount Everest?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by whom?"),
    ("Explain photosynthesis in simple terms.", "Explain photosynthesis simply."),
    ("How do I make a cup of tea?", "How to make a cup of tea?"),
]
DIFFERENT = [     # (question, another question with many words in common): measured 0.46 to 0.89
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("What is the capital of France?", "What is the population of France?"),
    ("How do I reverse a list in Python?", "How do I sort a list in Python?"),
    ("What is the boiling point of water?", "What is the freezing point of water?"),
    ("How many legs does a spider have?", "How many legs does an ant have?"),
    ("How do I make a cup of tea?", "How do I make a cup of coffee?"),
    ("What is 2 + 2?", "What is 2 + 3?"),
    ("What year did World War I start?", "What year did World War II start?"),
    ("Is a tomato a fruit?", "Is a tomato a vegetable?"),
]


@pytest.fixture(scope="module")
def minilm() -> EmbeddingEngine:
    return EmbeddingEngine(pull("all-minilm-l6-v2", progress=False), device="cpu")


def _similarity(engine: EmbeddingEngine, a: str, b: str) -> float:
    vectors, _ = engine.embed([a, b])
    return float(vectors[0] @ vectors[1])


def test_threshold_separates_paraphrases_from_different_questions(minilm):
    paraphrase = [_similarity(minilm, a, b) for a, b in PARAPHRASES]
    different = [_similarity(minilm, a, b) for a, b in DIFFERENT]
    assert min(paraphrase) >= DEFAULT_THRESHOLD, paraphrase
    assert max(different) < DEFAULT_THRESHOLD, different
    assert min(paraphrase) - max(different) > 0.04          # a margin on both sides, not a coin flip


def test_through_the_cache_a_paraphrase_hits_a_different_question_or_history_misses(minilm):
    async def embed(texts: list[str]) -> np.ndarray:
        return minilm.embed(texts)[0].numpy()

    async def main():
        spec = CacheSpec(semantic=SemanticCacheSpec(models=(SemanticModelSpec(MODEL),)))
        cache = ResponseCache.from_spec(spec, clock=lambda: 0.0)
        namespace = cache.namespace("acme")

        def request(question, history=None):
            return CacheRequest(namespace, MODEL, chat_body(question, history))

        lookup = await cache.lookup(request("Who painted the Mona Lisa?"), embed)
        assert lookup.status == "miss" and await cache.store(lookup, chat_reply("Leonardo da Vinci.").body)
        hit = await cache.lookup(request("Who was the painter of the Mona Lisa?"), embed)
        assert hit.status == "semantic-hit" and hit.hit.similarity >= DEFAULT_THRESHOLD
        assert hit.hit.reply.choice["message"]["content"] == "Leonardo da Vinci."
        assert (await cache.lookup(request("Who painted The Starry Night?"), embed)).status == "miss"
        history = [{"role": "user", "content": "Let's talk about forgeries."}, {"role": "assistant", "content": "Ok."}]
        assert (await cache.lookup(request("Who painted the Mona Lisa?", history), embed)).status == "miss"
        other = CacheRequest(cache.namespace("globex"), MODEL, chat_body("Who painted the Mona Lisa?"))
        assert (await cache.lookup(other, embed)).status == "miss"

    asyncio.run(main())
