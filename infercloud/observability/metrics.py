"""Metric names: each engine measurement under infercloud's name and vLLM's, recorded once for both.

The worker measures a finished request once (worker/metrics.py) and reads engine state once per scrape;
`EngineSeries` records each measurement under every series that names it: infercloud's (`infercloud_*`,
label `model`) and vLLM v1's (`vllm:*`, labels `model_name` and `engine`, vLLM's bucket boundaries), so
dashboards and autoscalers written for vLLM read an infercloud worker unchanged. The tables below are the
mapping; nothing else spells a vLLM name.

What differs from vLLM: token counters and the inter-token histogram grow when a request ends (vLLM adds
them every step); `vllm:inter_token_latency_seconds` still gets every gap between a request's tokens, as the
engine timed it (the end of the step that sampled each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from infercloud.contracts import ModelState

VLLM_LABELS = ("model_name", "engine")
VLLM_ENGINE = "0"         # one engine per model in a worker process: vLLM's engine index 0

# infercloud's own latency buckets (worker and gateway)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# vLLM v1's (vllm/v1/metrics/loggers.py)
VLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                     20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
VLLM_TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                              10.0, 20.0, 40.0, 80.0)
VLLM_REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                                120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
VLLM_N_BUCKETS = (1, 2, 5, 10, 20)


def buckets_1_2_5(max_value: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50, ... up to `max_value` (vLLM's token-count buckets)."""
    out, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_value:
                return tuple(out)
            out.append(m * scale)
        scale *= 10


# vLLM sizes these by the model's context; one worker hosts several models, so one bound serves all.
VLLM_TOKEN_COUNT_BUCKETS = buckets_1_2_5(1_000_000)


@dataclass(frozen=True)
class Series:
    """One exported series: its name (a counter's without `_total`), help, and whose labels it takes."""

    name: str
    doc: str
    buckets: tuple[float, ...] | None = None    # histograms only

    @property
    def is_vllm(self) -> bool:
        return self.name.startswith("vllm:")

    @property
    def labels(self) -> tuple[str, ...]:
        return VLLM_LABELS if self.is_vllm else ("model",)

    def label_values(self, model: str) -> tuple[str, ...]:
        return (model, VLLM_ENGINE) if self.is_vllm else (model,)


def _i(name: str, doc: str) -> Series:
    return Series(f"infercloud_{name}", doc, LATENCY_BUCKETS)


def _v(name: str, doc: str, buckets: tuple[float, ...] | None = None) -> Series:
    return Series(f"vllm:{name}", doc, buckets)


# Per finished request (histograms): measurement -> the series it is observed under.
HISTOGRAMS: dict[str, tuple[Series, ...]] = {
    "ttft": (_i("time_to_first_token_seconds", "Arrival to first token"),
             _v("time_to_first_token_seconds", "Histogram of time to first token in seconds.", VLLM_TTFT_BUCKETS)),
    "queue": (_i("request_queue_time_seconds", "Arrival to first scheduled"),
              _v("request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                 VLLM_REQUEST_LATENCY_BUCKETS)),
    "e2e": (_i("e2e_request_latency_seconds", "Arrival to last token"),
            _v("e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
               VLLM_REQUEST_LATENCY_BUCKETS)),
    "prefill": (_v("request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.",
                   VLLM_REQUEST_LATENCY_BUCKETS),),
    "decode": (_v("request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
                  VLLM_REQUEST_LATENCY_BUCKETS),),
    "inference": (_v("request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.",
                     VLLM_REQUEST_LATENCY_BUCKETS),),
    "tpot": (_i("time_per_output_token_seconds", "Mean gap between output tokens"),
             _v("request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.",
                VLLM_TOKEN_LATENCY_BUCKETS)),
    # one observation per gap between two tokens of a sequence
    "itl": (_v("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
               VLLM_TOKEN_LATENCY_BUCKETS),
            _v("time_per_output_token_seconds", "Histogram of time per output token in seconds. "
               "DEPRECATED: Use vllm:inter_token_latency_seconds instead.", VLLM_TOKEN_LATENCY_BUCKETS)),
    "prompt_len": (_v("request_prompt_tokens", "Number of prefill tokens processed.", VLLM_TOKEN_COUNT_BUCKETS),),
    "generation_len": (_v("request_generation_tokens", "Number of generation tokens processed.",
                          VLLM_TOKEN_COUNT_BUCKETS),),
    "max_tokens": (_v("request_params_max_tokens", "Histogram of the max_tokens request parameter.",
                      VLLM_TOKEN_COUNT_BUCKETS),
                   _v("request_max_num_generation_tokens",
                      "Histogram of maximum number of requested generation tokens.", VLLM_TOKEN_COUNT_BUCKETS)),
    "n": (_v("request_params_n", "Histogram of the n request parameter.", VLLM_N_BUCKETS),),
}

# Per finished request (counters, exported with `_total`).
COUNTERS: dict[str, tuple[Series, ...]] = {
    "prompt_tokens": (Series("infercloud_prompt_tokens", "Prompt tokens processed"),
                      _v("prompt_tokens", "Number of prefill tokens processed.")),
    "generation_tokens": (Series("infercloud_generation_tokens", "Tokens generated"),
                          _v("generation_tokens", "Number of generation tokens processed.")),
    "success": (_v("request_success", "Count of successfully processed requests."),),   # + finished_reason
}
EXTRA_LABELS = {"success": ("finished_reason",)}

# Read from the engine's state at scrape time: (series, value of a ModelState).
Read = Callable[[ModelState], float | None]
GAUGES: tuple[tuple[Series, Read], ...] = (
    (Series("infercloud_running", "Requests running in the engine"), lambda s: s.running),
    (Series("infercloud_waiting", "Requests waiting for the engine"), lambda s: s.waiting),
    (Series("infercloud_kv_blocks_used", "KV cache blocks in use"), lambda s: s.kv_blocks_used),
    (Series("infercloud_kv_blocks_total", "KV cache blocks in the pool"), lambda s: s.kv_blocks_total),
    (Series("infercloud_prefix_cache_hit_rate", "Share of prompt tokens served from the prefix cache"),
     lambda s: s.prefix_cache_hit_rate),
    (_v("num_requests_running", "Number of requests in model execution batches."), lambda s: s.running),
    (_v("num_requests_waiting", "Number of requests waiting to be processed."), lambda s: s.waiting),
    (_v("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."), lambda s: s.kv_usage),
    (_v("gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage. "
        "DEPRECATED: Use vllm:kv_cache_usage_perc instead."), lambda s: s.kv_usage),
)
STATE_COUNTERS: tuple[tuple[Series, Read], ...] = (
    (_v("prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."),
     lambda s: s.prefix_cache_queried_tokens),
    (_v("prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."),
     lambda s: s.prefix_cache_hit_tokens),
    (_v("num_preemptions", "Cumulative number of preemption from the engine."), lambda s: s.num_preemptions),
)


class EngineStateCollector:
    """Custom collector: every engine gauge and cumulative engine counter, per chat model, read at scrape."""

    def __init__(self, read_states: Callable[[], dict[str, ModelState]]):
        self.read_states = read_states

    def collect(self):
        states = {m: s for m, s in self.read_states().items() if s.kind == "chat"}
        for kind, table in ((GaugeMetricFamily, GAUGES), (CounterMetricFamily, STATE_COUNTERS)):
            for series, read in table:
                family = kind(series.name, series.doc, labels=list(series.labels))
                for model, state in states.items():
                    family.add_metric(list(series.label_values(model)), float(read(state) or 0.0))
                yield family


class EngineSeries:
    """The per-request histograms and counters of HISTOGRAMS and COUNTERS on one registry."""

    def __init__(self, registry: CollectorRegistry):
        self._histograms = {key: [Histogram(s.name, s.doc, list(s.labels), buckets=s.buckets, registry=registry)
                                  for s in table] for key, table in HISTOGRAMS.items()}
        self._counters = {key: [Counter(s.name, s.doc, [*s.labels, *EXTRA_LABELS.get(key, ())], registry=registry)
                                for s in table] for key, table in COUNTERS.items()}

    def observe(self, key: str, model: str, *values: float) -> None:
        """Each of `values` observed under every series of measurement `key`."""
        for series, metric in zip(HISTOGRAMS[key], self._histograms[key]):
            child = metric.labels(*series.label_values(model))
            for value in values:
                child.observe(value)

    def count(self, key: str, model: str, amount: float = 1, *extra: str) -> None:
        for series, metric in zip(COUNTERS[key], self._counters[key]):
            metric.labels(*series.label_values(model), *extra).inc(amount)


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can export (`_total`, `_bucket`, `_sum`, `_count` included), whether
    or not a sample exists yet: what a PromQL query may name."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
                "summary": ("_sum", "_count", ""), "info": ("_info",)}
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def all_series() -> Iterable[Series]:
    """Every engine series this module names (for docs and tests)."""
    for table in (*HISTOGRAMS.values(), *COUNTERS.values()):
        yield from table
    for series, _ in (*GAUGES, *STATE_COUNTERS):
        yield series
