"""Benchmark workloads by name (docs/benchmarks.md W1-W6, `random`, `jsonl`) and the requests they draw.

`make_workload(name, shape)` builds one from a `WorkloadShape` (vocabulary size, optional length
overrides, the prompts file); `request_rounds` draws requests for a run limited by time rather than
count. One module per kind of workload; W5 (routing) is W4's shape with a tenant per prefix; W7 (cold
start) and W8 (many models) will be more modules here, using the optional BenchRequest fields of base.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from infercloud.bench.workloads.base import MIN_TOKEN_ID, BenchRequest, Workload, is_scheduled, random_token_ids
from infercloud.bench.workloads.interference import Interference
from infercloud.bench.workloads.jsonl import JsonlError, JsonlPrompts, Tokenize, load_jsonl
from infercloud.bench.workloads.shared_prefix import SharedPrefix, w4_requests
from infercloud.bench.workloads.synthetic import LognormalLengths, UniformLengths, w1, w1_requests, w2

__all__ = ["MIN_TOKEN_ID", "BenchRequest", "Workload", "WorkloadShape", "WORKLOADS", "Interference", "JsonlError",
           "JsonlPrompts", "LognormalLengths", "SharedPrefix", "Tokenize", "UniformLengths", "is_scheduled", "load_jsonl",
           "make_workload", "random_token_ids", "request_rounds", "w1_requests", "w4_requests"]

ROUND_SIZE = 256  # requests drawn at a time for a run limited by duration


@dataclass(frozen=True)
class WorkloadShape:
    """What a workload needs besides its name; None lengths keep the workload's own."""

    vocab_size: int
    input_len: int | None = None      # W1/W2/random: prompt; W3: median; W4: prefix; W6: the long prompt
    output_len: int | None = None     # W1/W2/random/W4: output; W3: median; W6: the streams' output
    range_ratio: float = 0.5          # `random`: lengths uniform in L * [1 - r, 1 + r]
    jsonl_path: str | None = None     # `jsonl`: the prompts file
    tokenize: Tokenize | None = None  # `jsonl`: turns text prompts into ids


def _w3(s: WorkloadShape) -> Workload:
    return LognormalLengths(s.vocab_size, s.input_len or 256, s.output_len or 128)


def _w4(s: WorkloadShape) -> Workload:
    return SharedPrefix(s.vocab_size, prefix_len=s.input_len or 1024, output_len=s.output_len or 32)


def _w5(s: WorkloadShape) -> Workload:
    return SharedPrefix(s.vocab_size, num_prefixes=16, num_questions=16, prefix_len=s.input_len or 1024,
                        output_len=s.output_len or 32, name="W5", tenant_per_prefix=True, shuffle=True,
                        warm_each_prefix=True)


def _w6(s: WorkloadShape) -> Workload:
    return Interference(s.vocab_size, long_input_len=s.input_len or 2048, stream_output_len=s.output_len or 256)


def _random(s: WorkloadShape) -> Workload:
    return UniformLengths("random", s.vocab_size, s.input_len or 128, s.output_len or 128, s.range_ratio)


def _jsonl(s: WorkloadShape) -> Workload:
    if s.jsonl_path is None:
        raise ValueError("the jsonl workload needs a prompts file (--jsonl FILE)")
    return load_jsonl(s.jsonl_path, s.tokenize)


WORKLOADS: dict[str, Callable[[WorkloadShape], Workload]] = {
    "W1": lambda s: w1(s.vocab_size, s.input_len or 128, s.output_len or 128),
    "W2": lambda s: w2(s.vocab_size, s.input_len or 1024, s.output_len or 16),
    "W3": _w3,
    "W4": _w4,
    "W5": _w5,
    "W6": _w6,
    "random": _random,
    "jsonl": _jsonl,
}


def make_workload(name: str, shape: WorkloadShape) -> Workload:
    """The workload called `name` (case-insensitive) with `shape`; ValueError for an unknown name."""
    by_folded_name = {key.lower(): factory for key, factory in WORKLOADS.items()}
    factory = by_folded_name.get(name.lower())
    if factory is None:
        raise ValueError(f"unknown workload '{name}' (known: {', '.join(WORKLOADS)})")
    return factory(shape)


def request_rounds(workload: Workload, rng: np.random.Generator) -> Iterator[BenchRequest]:
    """Requests without end, drawn a round at a time; ids of later rounds get a `@k` suffix."""
    size = workload.natural_size or ROUND_SIZE
    round_index = 0
    while True:
        for req in workload.requests(rng, size):
            yield req if round_index == 0 else replace(req, request_id=f"{req.request_id}@{round_index}")
        round_index += 1
