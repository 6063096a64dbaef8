"""ServerMetrics: the worker's Prometheus metrics, in a registry of its own (no global state).

Request counters and latency histograms are recorded as requests end; engine gauges (running,
waiting, KV blocks, prefix-cache hit rate) are read from the engines at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from infercloud.contracts import ModelState
from infercloud.engine.outputs import RequestOutput

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _EngineGauges:
    """Custom collector: one sample per model of each engine gauge, read when Prometheus scrapes."""

    def __init__(self, read_states: Callable[[], dict[str, ModelState]]):
        self.read_states = read_states

    def collect(self):
        fields = {"running": "Requests running in the engine", "waiting": "Requests waiting for the engine",
                  "kv_blocks_used": "KV cache blocks in use", "kv_blocks_total": "KV cache blocks in the pool",
                  "prefix_cache_hit_rate": "Share of prompt tokens served from the prefix cache"}
        states = {m: s for m, s in self.read_states().items() if s.kind == "chat"}
        for name, doc in fields.items():
            family = GaugeMetricFamily(f"infercloud_{name}", doc, labels=["model"])
            for model, state in states.items():
                family.add_metric([model], float(getattr(state, name) or 0.0))
            yield family


class ServerMetrics:
    def __init__(self, read_states: Callable[[], dict[str, ModelState]]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("infercloud_requests", "Requests by model, endpoint and outcome",
                                ["model", "endpoint", "status"], registry=r)
        self.ttft = Histogram("infercloud_time_to_first_token_seconds", "Arrival to first token", ["model"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("infercloud_time_per_output_token_seconds", "Mean gap between output tokens",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("infercloud_e2e_request_latency_seconds", "Arrival to last token", ["model"],
                             buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("infercloud_request_queue_time_seconds", "Arrival to first scheduled", ["model"],
                               buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("infercloud_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.generation_tokens = Counter("infercloud_generation_tokens", "Tokens generated", ["model"], registry=r)
        r.register(_EngineGauges(read_states))

    def request_done(self, model: str, endpoint: str, status: str) -> None:
        self.requests.labels(model, endpoint, status).inc()

    def observe_request(self, model: str, out: RequestOutput, completion_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(len(out.prompt_token_ids))
        self.generation_tokens.labels(model).inc(completion_tokens)
        for m in out.metrics:
            if m.first_token_time is not None:
                self.ttft.labels(model).observe(m.first_token_time - m.arrival_time)
            if m.first_scheduled_time is not None:
                self.queue.labels(model).observe(m.first_scheduled_time - m.arrival_time)
            if m.finished_time is not None:
                self.e2e.labels(model).observe(m.finished_time - m.arrival_time)
        n = len(out.metrics) or 1
        m = out.metrics[0] if out.metrics else None
        if m and m.finished_time and m.first_token_time and completion_tokens // n > 1:
            self.tpot.labels(model).observe((m.finished_time - m.first_token_time) / (completion_tokens // n - 1))

    def observe_embeddings(self, model: str, num_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(num_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
