"""GatewayMetrics: bounded tenant labels, stream latencies against each model's SLO, autoscaler decisions."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from infercloud.config import AutoscalingSpec, ModelSpec
from infercloud.engine.step_loop import SLO
from infercloud.fleet.replicas import ReplicaSet
from infercloud.fleet.traffic import Traffic
from infercloud.gateway.load_book import LoadBook
from infercloud.gateway.metrics import BoundedLabels, GatewayMetrics, slo_targets


def samples(metrics: GatewayMetrics) -> dict[tuple, float]:
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def make(*models: ModelSpec, max_tenants: int = 100) -> GatewayMetrics:
    fleet = ReplicaSet()
    return GatewayMetrics(fleet, LoadBook(fleet, 64), models, max_tenants)


def test_tenant_labels_are_the_first_tenants_seen_then_other():
    label = BoundedLabels(cap=2)
    assert [label(t) for t in ("a", "b", "c", "a", None, "d", "b")] == ["a", "b", "other", "a", "-", "other", "b"]


def test_requests_count_per_model_and_tenant_within_the_cap():
    m = make(max_tenants=1)
    m.request_done("smol", "/v1/chat/completions", 200, 0.1, "acme")
    m.request_done("smol", "/v1/chat/completions", 200, 0.1, "globex")
    m.request_done("smol", "/v1/chat/completions", 401, 0.0, None)
    got = samples(m)
    key = "infercloud_gateway_tenant_requests_total"
    assert got[(key, (("model", "smol"), ("status", "200"), ("tenant", "acme")))] == 1
    assert got[(key, (("model", "smol"), ("status", "200"), ("tenant", "other")))] == 1
    assert got[(key, (("model", "smol"), ("status", "401"), ("tenant", "-")))] == 1
    assert got[("infercloud_gateway_requests_total",
                (("endpoint", "/v1/chat/completions"), ("model", "smol"), ("status", "200")))] == 2


def test_slo_targets_prefer_the_autoscaling_section_then_the_model_slo():
    assert slo_targets(ModelSpec("a", slo=SLO(1.0, 0.1))) == (1.0, 0.1)
    assert slo_targets(ModelSpec("b", slo=SLO(1.0, 0.1), autoscaling=AutoscalingSpec(ttft_slo_s=0.5))) == (0.5, 0.1)
    assert slo_targets(ModelSpec("c")) == (None, None)


def test_streams_done_count_against_the_model_slo():
    m = make(ModelSpec("fast", slo=SLO(ttft_s=0.5, tpot_s=0.05)), ModelSpec("free"))
    traffic = Traffic(lambda: 0.0)
    traffic.on_stream_done = m.stream_done           # as cloud.py wires it
    traffic.stream_done("fast", 0.2, 0.01)
    traffic.stream_done("fast", 0.9, None)
    traffic.stream_done("free", 3.0, 0.5)
    got = samples(m)
    slo = "infercloud_gateway_slo_total"
    assert got[(slo, (("metric", "ttft"), ("model", "fast"), ("result", "met")))] == 1
    assert got[(slo, (("metric", "ttft"), ("model", "fast"), ("result", "missed")))] == 1
    assert got[(slo, (("metric", "tpot"), ("model", "fast"), ("result", "met")))] == 1
    assert got[(slo, (("metric", "tpot"), ("model", "fast"), ("result", "missed")))] == 0
    assert not [k for k in got if k[0] == slo and ("model", "free") in k[1]]   # no targets, no attainment
    assert got[("infercloud_gateway_ttft_seconds_count", (("model", "fast"),))] == 2
    assert got[("infercloud_gateway_tpot_seconds_count", (("model", "free"),))] == 1
    assert traffic.observe("fast").ttft_p90_s == 0.9      # the autoscaler's feed is unchanged


def test_autoscaler_decisions_are_counted_by_action():
    m = make()
    for action, target in (("hold", 1), ("scale_up", 2), ("hold", 2)):
        m.autoscaler_decision("smol", action, target)
    got = samples(m)
    assert got[("infercloud_autoscaler_decisions_total", (("action", "hold"), ("model", "smol")))] == 2
    assert got[("infercloud_autoscaler_target_replicas", (("model", "smol"),))] == 2
