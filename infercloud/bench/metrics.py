"""Serving metrics of docs/benchmarks.md from raw request timelines: latencies, throughput, goodput, failures.

Definitions are those of `vllm bench serve`, so numbers compare:
  TTFT = first chunk with non-empty text - send;   E2EL = last byte - send;
  TPOT = (E2EL - TTFT) / (output tokens - 1), only for outputs of 2+ tokens;
  ITL  = every gap between content chunks, pooled over all requests;
  request / output throughput = completed requests / output tokens over the wall time (first send ->
  last request done); goodput = completed requests meeting every SLO / wall time. A request without a
  TPOT (one token out) meets any TPOT SLO. Failed requests count apart, never in latencies or goodput.
Latencies are summarized as mean, p50, p90, p99 (closed_loop.summarize).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def summarize(values: Sequence[float]) -> dict[str, float | None]:
    """mean, p50, p90, p99 (linear interpolation, as numpy and `vllm bench` do); None when empty."""
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "p50": float(np.percentile(arr, 50)),
            "p90": float(np.percentile(arr, 90)), "p99": float(np.percentile(arr, 99))}


@dataclass
class StreamRecord:
    request_id: str
    num_prompt_tokens: int
    send_s: float
    content_times_s: list[float] = field(default_factory=list)  # arrival of each chunk with non-empty text
    last_byte_s: float | None = None
    completion_tokens: int | None = None                         # from the final usage chunk
    error: str | None = None                                     # "KIND: detail"; None when it succeeded

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        return self.content_times_s[0] - self.send_s if self.ok and self.content_times_s else None

    @property
    def e2el_s(self) -> float | None:
        return self.last_byte_s - self.send_s if self.ok and self.last_byte_s is not None else None

    @property
    def tpot_s(self) -> float | None:
        """(E2EL - TTFT) / (output tokens - 1); None for a one-token output or a failed request."""
        ttft, e2el, out = self.ttft_s, self.e2el_s, self.completion_tokens
        if ttft is None or e2el is None or out is None or out < 2:
            return None
        return (e2el - ttft) / (out - 1)

    @property
    def itls_s(self) -> list[float]:
        if not self.ok:
            return []
        times = self.content_times_s
        return [later - earlier for earlier, later in zip(times, times[1:])]

    def to_json(self) -> dict:
        return {"request_id": self.request_id, "num_prompt_tokens": self.num_prompt_tokens,
                "completion_tokens": self.completion_tokens, "error": self.error, "ttft_s": self.ttft_s,
                "tpot_s": self.tpot_s, "e2el_s": self.e2el_s,
                "chunk_offsets_s": [t - self.send_s for t in self.content_times_s]}


@dataclass(frozen=True)
class Slo:
    """Service-level objectives; None means no limit on that metric."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    def is_met_by(self, record: StreamRecord) -> bool:
        if not record.ok:
            return False
        limits = ((self.ttft_ms, record.ttft_s), (self.tpot_ms, record.tpot_s), (self.e2el_ms, record.e2el_s))
        return all(limit is None or value is None or value * 1000 <= limit for limit, value in limits)


def parse_slo(text: str) -> Slo:
    """'ttft_ms=2000,tpot_ms=200' -> Slo; keys ttft_ms, tpot_ms, e2el_ms; values positive numbers."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in Slo.__dataclass_fields__:
            raise ValueError(f"bad SLO '{part}': expected ttft_ms=..., tpot_ms=... or e2el_ms=...")
        try:
            values[key] = float(value)
        except ValueError:
            raise ValueError(f"bad SLO '{part}': '{value}' is not a number") from None
        if values[key] <= 0:
            raise ValueError(f"bad SLO '{part}': must be positive")
    return Slo(**values)


@dataclass
class LoadResult:
    wall_s: float                  # first send -> last request done
    records: list[StreamRecord]
    client_cpu_s: float | None = None
    warmup_failures: int = 0
    start_s: float = 0.0           # the clock when the first request could go (for send offsets)

    @property
    def completed(self) -> list[StreamRecord]:
        return [r for r in self.records if r.ok]

    @property
    def failures(self) -> dict[str, int]:
        """Failed requests by kind ("HTTP 503", "ReadTimeout", "no usage chunk", ...)."""
        return dict(Counter(r.error.split(":")[0] for r in self.records if not r.ok))

    @property
    def output_tokens(self) -> int:
        return sum(r.completion_tokens or 0 for r in self.completed)

    @property
    def request_throughput(self) -> float:
        return len(self.completed) / self.wall_s

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / self.wall_s

    def num_good(self, slo: Slo) -> int:
        return sum(slo.is_met_by(r) for r in self.records)

    def goodput(self, slo: Slo) -> float:
        """Completed requests that meet every objective of `slo`, per second of wall time."""
        return self.num_good(slo) / self.wall_s

    def summary(self, slo: Slo | None = None) -> dict:
        """Every aggregate number of the run (no per-request rows); goodput only with an SLO."""
        done = self.completed
        input_tokens = sum(r.num_prompt_tokens for r in done)
        return {
            "wall_s": self.wall_s, "num_requests": len(self.records), "completed": len(done),
            "failed": len(self.records) - len(done), "failures": self.failures,
            "warmup_failures": self.warmup_failures, "client_cpu_s": self.client_cpu_s,
            "input_tokens": input_tokens, "output_tokens": self.output_tokens,
            "request_throughput_req_s": self.request_throughput,
            "output_throughput_tok_s": self.output_throughput,
            "total_token_throughput_tok_s": (input_tokens + self.output_tokens) / self.wall_s,
            "slo": None if slo is None else {k: v for k, v in vars(slo).items() if v is not None},
            "good_requests": None if slo is None else self.num_good(slo),
            "goodput_req_s": None if slo is None else self.goodput(slo),
            "ttft_s": summarize([r.ttft_s for r in done if r.ttft_s is not None]),
            "tpot_s": summarize([r.tpot_s for r in done if r.tpot_s is not None]),
            "itl_s": summarize([gap for r in done for gap in r.itls_s]),
            "e2el_s": summarize([r.e2el_s for r in done if r.e2el_s is not None]),
        }

    def request_rows(self) -> list[dict]:
        """Every request's timeline, with its send time relative to the start of the run."""
        return [dict(r.to_json(), send_offset_s=r.send_s - self.start_s) for r in self.records]

    def to_json(self, slo: Slo | None = None) -> dict:
        return {**self.summary(slo), "requests": self.request_rows()}
