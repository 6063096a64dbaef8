"""Benchmark request sets (W1 decode, W4 shared prefix): random token ids from a seeded generator.

Token ids are drawn from [MIN_TOKEN_ID, vocab_size) so that no prompt contains the special tokens at
the bottom of the vocabulary. The same seed gives the same requests, so every system sees the same work.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MIN_TOKEN_ID = 100


@dataclass(frozen=True)
class BenchRequest:
    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    prefix_index: int | None = None  # W4: which shared prefix the prompt starts with


def random_token_ids(rng: random.Random, num_tokens: int, vocab_size: int) -> list[int]:
    return [rng.randrange(MIN_TOKEN_ID, vocab_size) for _ in range(num_tokens)]


def w1_requests(num_requests: int, vocab_size: int, seed: int = 0,
                prompt_len: int = 128, max_tokens: int = 128) -> list[BenchRequest]:
    """W1 decode: independent random prompts of `prompt_len` tokens, `max_tokens` out each."""
    rng = random.Random(seed)
    return [BenchRequest(f"w1-{i}", random_token_ids(rng, prompt_len, vocab_size), max_tokens)
            for i in range(num_requests)]


def w4_requests(vocab_size: int, num_prefixes: int = 8, num_questions: int = 16, seed: int = 0,
                prefix_len: int = 1024, question_len: int = 32, max_tokens: int = 32) -> list[BenchRequest]:
    """W4 shared prefix: `num_prefixes` prefixes x `num_questions` questions, ordered question-major.

    The order interleaves prefixes (p0q0, p1q0, ..., p7q0, p0q1, ...), so consecutive requests never share
    a prefix and a prefix's later questions arrive after its first one has been computed (or is being).
    """
    rng = random.Random(seed)
    prefixes = [random_token_ids(rng, prefix_len, vocab_size) for _ in range(num_prefixes)]
    questions = [[random_token_ids(rng, question_len, vocab_size) for _ in range(num_questions)]
                 for _ in range(num_prefixes)]
    return [BenchRequest(f"w4-p{p}-q{q}", prefixes[p] + questions[p][q], max_tokens, prefix_index=p)
            for q in range(num_questions) for p in range(num_prefixes)]
