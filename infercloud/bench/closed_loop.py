"""Closed-loop driver for LLMEngine (exactly c requests in flight) and the per-request metrics it yields.

The driver adds `concurrency` requests, then steps the engine; each time a request finishes it adds the
next one, until every request has completed. Times come from the injected clock, taken by the client
side of the loop (not the engine's own metrics): TTFT is add -> the step that returns the first token,
E2E is add -> the step that returns the last. Metric definitions follow docs/benchmarks.md (vLLM's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


from infercloud.bench.metrics import summarize  # noqa: F401 - re-exported for the offline benchmark
from infercloud.bench.workloads import BenchRequest
from infercloud.engine.engine import LLMEngine
from infercloud.engine.sampling import SamplingParams


@dataclass
class RequestTiming:
    request_id: str
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    ttft_s: float
    e2e_s: float

    @property
    def tpot_s(self) -> float | None:
        """(E2E - TTFT) / (output tokens - 1); None for a one-token output."""
        if self.num_output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.num_output_tokens - 1)


@dataclass
class ClosedLoopResult:
    concurrency: int
    wall_s: float
    requests: list[RequestTiming]

    @property
    def output_tokens(self) -> int:
        return sum(r.num_output_tokens for r in self.requests)

    @property
    def output_throughput(self) -> float:
        """Output tokens per second of wall time."""
        return self.output_tokens / self.wall_s

    def to_json(self) -> dict:
        return {
            "concurrency": self.concurrency, "wall_s": self.wall_s, "num_requests": len(self.requests),
            "output_tokens": self.output_tokens, "output_throughput_tok_s": self.output_throughput,
            "ttft_s": summarize([r.ttft_s for r in self.requests]),
            "tpot_s": summarize([r.tpot_s for r in self.requests if r.tpot_s is not None]),
            "e2e_s": summarize([r.e2e_s for r in self.requests]),
            "requests": [dict(vars(r), tpot_s=r.tpot_s) for r in self.requests],
        }


def greedy_params(max_tokens: int) -> SamplingParams:
    """Benchmark sampling: greedy, exactly max_tokens out (EOS ignored)."""
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def run_closed_loop(engine: LLMEngine, requests: Sequence[BenchRequest], concurrency: int,
                    id_prefix: str = "", clock: Callable[[], float] = time.perf_counter) -> ClosedLoopResult:
    """Run `requests` in order with exactly `concurrency` in flight (fewer only at the end)."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    pending = list(reversed(requests))
    sent: dict[str, tuple[BenchRequest, float]] = {}
    first_token: dict[str, float] = {}
    num_tokens: dict[str, int] = {}
    done: list[RequestTiming] = []

    def send() -> None:
        req = pending.pop()
        rid = id_prefix + req.request_id
        sent[rid] = (req, clock())
        num_tokens[rid] = 0
        engine.add_request(rid, req.prompt_token_ids, greedy_params(req.max_tokens))

    start = end = clock()
    while pending and len(sent) < concurrency:
        send()
    while sent:
        outputs = engine.step()
        now = end = clock()
        for out in outputs:
            new = sum(len(c.delta_token_ids) for c in out.outputs)
            num_tokens[out.request_id] += new
            if new and out.request_id not in first_token:
                first_token[out.request_id] = now
            if out.finished:
                req, sent_at = sent.pop(out.request_id)
                done.append(RequestTiming(out.request_id, len(req.prompt_token_ids), num_tokens[out.request_id],
                                          out.num_cached_tokens, first_token[out.request_id] - sent_at,
                                          now - sent_at))
                if pending:
                    send()
    return ClosedLoopResult(concurrency, end - start, done)
