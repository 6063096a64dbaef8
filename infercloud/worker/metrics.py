"""ServerMetrics: the worker's Prometheus metrics, in a registry of its own (no global state).

Request counters and latency histograms are recorded as requests end; engine gauges (running,
waiting, KV blocks, prefix-cache hit rate) are read from the engines at scrape time. Each engine
measurement is exported under infercloud's name and vLLM's (observability/metrics.py has the mapping).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, generate_latest

from infercloud.contracts import ModelState
from infercloud.engine.outputs import RequestOutput
from infercloud.engine.sampling import SamplingParams
from infercloud.observability.metrics import LATENCY_BUCKETS, EngineSeries, EngineStateCollector

__all__ = ["LATENCY_BUCKETS", "ServerMetrics"]


class ServerMetrics:
    def __init__(self, read_states: Callable[[], dict[str, ModelState]]):
        self.registry = CollectorRegistry()
        self.requests = Counter("infercloud_requests", "Requests by model, endpoint and outcome",
                                ["model", "endpoint", "status"], registry=self.registry)
        self.engine = EngineSeries(self.registry)
        self.registry.register(EngineStateCollector(read_states))

    def request_done(self, model: str, endpoint: str, status: str) -> None:
        self.requests.labels(model, endpoint, status).inc()

    def observe_request(self, model: str, out: RequestOutput, completion_tokens: int,
                        params: SamplingParams | None = None) -> None:
        """A finished request (one prompt's output, with its n sequences): every per-request series."""
        e = self.engine
        e.count("prompt_tokens", model, len(out.prompt_token_ids))
        e.count("generation_tokens", model, completion_tokens)
        e.observe("prompt_len", model, len(out.prompt_token_ids))
        e.observe("generation_len", model, completion_tokens)
        reason = next((c.finish_reason for c in out.outputs if c.finish_reason), None)
        e.count("success", model, 1, reason or "stop")
        if params is not None:
            e.observe("max_tokens", model, params.max_tokens)
            e.observe("n", model, params.n)
        for m in out.metrics:
            if m.first_token_time is not None:
                e.observe("ttft", model, m.first_token_time - m.arrival_time)
            if m.first_scheduled_time is not None:
                e.observe("queue", model, m.first_scheduled_time - m.arrival_time)
            if m.finished_time is not None:
                e.observe("e2e", model, m.finished_time - m.arrival_time)
            if m.first_scheduled_time is not None and m.first_token_time is not None:
                e.observe("prefill", model, m.first_token_time - m.first_scheduled_time)
            if m.first_token_time is not None and m.finished_time is not None:
                e.observe("decode", model, m.finished_time - m.first_token_time)
            if m.first_scheduled_time is not None and m.finished_time is not None:
                e.observe("inference", model, m.finished_time - m.first_scheduled_time)
            if m.token_gaps:
                e.observe("itl", model, *m.token_gaps)
                e.observe("tpot", model, sum(m.token_gaps) / len(m.token_gaps))

    def observe_embeddings(self, model: str, num_tokens: int) -> None:
        self.engine.count("prompt_tokens", model, num_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
