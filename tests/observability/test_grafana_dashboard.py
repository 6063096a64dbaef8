"""deploy/grafana/infercloud.json names only metrics infercloud exports, and vLLM's own dashboards' series are
among the worker's: every name a query uses is a sample name of the worker's or the gateway's registry,
built in-process as the worker and the gateway build them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infercloud.evaluation.service import EvaluationMetrics
from infercloud.fleet.replicas import ReplicaSet
from infercloud.gateway.load_book import LoadBook
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.observability.metrics import VLLM_LABELS, all_series, exported_names
from infercloud.worker.metrics import ServerMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "infercloud.json"

# What vLLM's example Grafana dashboards query (examples/online_serving/prometheus_grafana/grafana.json,
# older and newer versions): a worker must export them all, labelled `model_name`, for them to work unchanged.
VLLM_DASHBOARD_NAMES = {
    "vllm:e2e_request_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:time_per_output_token_seconds_bucket", "vllm:time_per_output_token_seconds_sum",
    "vllm:time_per_output_token_seconds_count", "vllm:inter_token_latency_seconds_bucket",
    "vllm:inter_token_latency_seconds_sum", "vllm:inter_token_latency_seconds_count",
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
    "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc", "vllm:request_prompt_tokens_bucket",
    "vllm:request_generation_tokens_bucket", "vllm:request_success_total", "vllm:request_queue_time_seconds_sum",
    "vllm:request_prefill_time_seconds_sum", "vllm:request_decode_time_seconds_sum",
    "vllm:request_max_num_generation_tokens_sum", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
}

_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, aggregations,
    keywords, label names or parts of strings, matchers and ranges."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)                        # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                       # range and subquery durations
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)   # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end():].lstrip().startswith("(") or m.group().lower() in _NOT_METRICS:
            continue
        names.add(m.group())
    return names


def dashboard_queries(dashboard: dict) -> list[str]:
    """Every panel target's expr (rows' nested panels too) and every query variable's metric selector."""
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and isinstance(query, str):
            m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*", query)
            exprs.append(m.group(1) if m else query)
    return exprs


@pytest.fixture(scope="module")
def exported() -> set[str]:
    worker = ServerMetrics(lambda: {})
    fleet = ReplicaSet()
    gateway = GatewayMetrics(fleet, LoadBook(fleet, 64))
    EvaluationMetrics(gateway.registry, ())       # the evaluation's metrics live on the gateway's registry
    return exported_names(worker.registry) | exported_names(gateway.registry)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_metric_names_are_read_out_of_promql():
    assert metric_names('histogram_quantile(0.9, sum by (le) (rate(vllm:ttft_bucket{model_name=~"$m"}'
                        '[$__rate_interval])))') == {"vllm:ttft_bucket"}
    assert metric_names('sum(rate(a_total{x="by (y)"}[5m])) by (model) / ignoring(z) b offset 5m > bool 1e-3') \
        == {"a_total", "b"}


def test_every_query_names_a_metric_infercloud_exports(dashboard, exported):
    queries = dashboard_queries(dashboard)
    named = set().union(*(metric_names(q) for q in queries))
    assert len(queries) > 30 and len(named) > 25
    unknown = sorted(named - exported)
    assert not unknown, f"the dashboard queries metrics nobody exports: {unknown}"


def test_the_dashboard_is_importable_and_covers_the_issue(dashboard):
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and {"model_name", "model"} <= set(variables)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["targets"] and p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    named = set().union(*(metric_names(q) for q in dashboard_queries(dashboard)))
    for name in ("vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
                 "infercloud_gateway_tenant_requests_total", "infercloud_gateway_slo_total",
                 "infercloud_autoscaler_decisions_total", "infercloud_evaluation_score_bucket",
                 "infercloud_evaluation_degraded", "infercloud_gateway_cache_total"):
        assert name in named, name


def test_vllm_dashboards_find_their_series_on_a_worker(exported):
    assert VLLM_DASHBOARD_NAMES <= exported, sorted(VLLM_DASHBOARD_NAMES - exported)
    for series in all_series():
        assert series.labels == (VLLM_LABELS if series.name.startswith("vllm:") else ("model",)), series
