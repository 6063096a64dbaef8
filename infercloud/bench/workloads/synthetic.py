"""Independent random prompts: W1 decode, W2 prefill, `random` (uniform lengths), W3 (lognormal lengths).

Every request is a fresh random prompt (no shared prefix), so a prefix cache cannot help. Lengths are
either drawn uniformly from [L * (1 - r), L * (1 + r)] (r = 0: every request exactly L, as in W1
and W2) or from a lognormal around a median (W3: many short requests and a long tail, clipped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from infercloud.bench.workloads.base import BenchRequest, random_token_ids


@dataclass(frozen=True)
class UniformLengths:
    """Prompt and output lengths uniform within `range_ratio` of `input_len` / `output_len`."""

    name: str
    vocab_size: int
    input_len: int
    output_len: int
    range_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.range_ratio < 1.0:
            raise ValueError("range_ratio must be in [0, 1)")
        if self.input_len < 1 or self.output_len < 1:
            raise ValueError("input and output lengths must be at least 1")

    @property
    def natural_size(self) -> None:
        return None

    def requests(self, rng: np.random.Generator, num_requests: int) -> list[BenchRequest]:
        input_lens = _uniform(rng, self.input_len, self.range_ratio, num_requests)
        output_lens = _uniform(rng, self.output_len, self.range_ratio, num_requests)
        return [BenchRequest(f"{self.name.lower()}-{i}", random_token_ids(rng, n_in, self.vocab_size), n_out)
                for i, (n_in, n_out) in enumerate(zip(input_lens, output_lens))]


@dataclass(frozen=True)
class LognormalLengths:
    """W3 mixed: lengths lognormal around their medians (sigma in log space), clipped to [1, max]."""

    vocab_size: int
    input_median: int = 256
    output_median: int = 128
    sigma: float = 0.8
    max_input_len: int = 2048
    max_output_len: int = 1024
    name: str = "W3"

    @property
    def natural_size(self) -> None:
        return None

    def requests(self, rng: np.random.Generator, num_requests: int) -> list[BenchRequest]:
        input_lens = _lognormal(rng, self.input_median, self.sigma, self.max_input_len, num_requests)
        output_lens = _lognormal(rng, self.output_median, self.sigma, self.max_output_len, num_requests)
        return [BenchRequest(f"w3-{i}", random_token_ids(rng, n_in, self.vocab_size), n_out)
                for i, (n_in, n_out) in enumerate(zip(input_lens, output_lens))]


def w1(vocab_size: int, input_len: int = 128, output_len: int = 128) -> UniformLengths:
    return UniformLengths("W1", vocab_size, input_len, output_len)


def w2(vocab_size: int, input_len: int = 1024, output_len: int = 16) -> UniformLengths:
    return UniformLengths("W2", vocab_size, input_len, output_len)


def w1_requests(num_requests: int, vocab_size: int, seed: int = 0,
                prompt_len: int = 128, max_tokens: int = 128) -> list[BenchRequest]:
    """W1 decode: `num_requests` random prompts of `prompt_len` tokens, `max_tokens` out each."""
    return w1(vocab_size, prompt_len, max_tokens).requests(np.random.default_rng(seed), num_requests)


def _uniform(rng: np.random.Generator, length: int, range_ratio: float, n: int) -> list[int]:
    low = max(1, math.floor(length * (1 - range_ratio)))
    high = max(low, math.ceil(length * (1 + range_ratio)))
    return rng.integers(low, high + 1, size=n).tolist()


def _lognormal(rng: np.random.Generator, median: int, sigma: float, max_len: int, n: int) -> list[int]:
    draws = rng.lognormal(mean=math.log(median), sigma=sigma, size=n)
    return np.clip(np.rint(draws), 1, max_len).astype(int).tolist()
