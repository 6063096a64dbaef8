"""A worker's /metrics under vLLM's names and labels (observability/metrics.py), on the real SmolLM2: the
series vLLM's dashboards query exist with `model_name`, and they move with the requests served."""

from __future__ import annotations

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

CHAT = "smollm2-135m-instruct"
# a prompt of several KV blocks, sent twice: the second time its full blocks come from the prefix cache
PROMPT = [{"role": "user", "content": "Here is a list of fruits: " + ", ".join(
    f"fruit number {i}" for i in range(40)) + ". Which one comes first?"}]


def scrape(server) -> dict[str, dict[tuple, float]]:
    """name -> {sorted labels: value}, every sample of the worker's /metrics."""
    r = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=10)
    assert r.status_code == 200
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    want = {"model_name": CHAT, "engine": "0", **labels}
    return sum(v for k, v in samples.get(name, {}).items() if want.items() <= dict(k).items())


def test_vllm_series_follow_the_requests(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    before = scrape(server)
    client.chat.completions.create(model=CHAT, messages=PROMPT, max_tokens=8, temperature=0)
    streamed = 2
    for _ in range(streamed):
        chunks = list(client.chat.completions.create(model=CHAT, messages=PROMPT, max_tokens=8, temperature=0,
                                                     stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:gpu_cache_usage_perc"):
        assert (("engine", "0"), ("model_name", CHAT)) in after[name], name
    assert delta("vllm:time_to_first_token_seconds_count") >= streamed + 1
    assert delta("vllm:e2e_request_latency_seconds_count") >= streamed + 1
    assert delta("vllm:request_queue_time_seconds_count") >= streamed + 1
    assert delta("vllm:inter_token_latency_seconds_count") >= 3 * 7      # 8 tokens: 7 gaps a request
    # one observation per gap the engine timed: each request's tokens less its first
    assert delta("vllm:inter_token_latency_seconds_count") == delta("vllm:generation_tokens_total") - (streamed + 1)
    assert delta("vllm:request_time_per_output_token_seconds_count") == streamed + 1
    assert delta("vllm:request_success_total") >= streamed + 1
    assert delta("vllm:request_success_total", finished_reason="length") + \
        delta("vllm:request_success_total", finished_reason="stop") >= streamed + 1
    assert delta("vllm:prompt_tokens_total") >= 3 * 100
    assert delta("vllm:generation_tokens_total") >= 3
    assert delta("vllm:prefix_cache_queries_total") >= 3 * 100             # tokens looked up, as vLLM v1
    assert delta("vllm:prefix_cache_hits_total") >= 2 * 64                # the repeats hit their full blocks
    assert value(after, "vllm:prefix_cache_hits_total") <= value(after, "vllm:prefix_cache_queries_total")
    # the same events under infercloud's names
    ttft = sum(v for k, v in after["infercloud_time_to_first_token_seconds_count"].items() if ("model", CHAT) in k)
    assert ttft == value(after, "vllm:time_to_first_token_seconds_count")
    assert all({"model_name", "engine"} <= dict(k).keys()
               for name, series in after.items() if name.startswith("vllm:") for k in series)
