"""GatewayMetrics: the gateway's Prometheus metrics (requests by model and tenant, stream latencies and SLO
attainment, retries, migrations, autoscaler decisions, per-replica load).

Labels stay bounded: models are configured names ("other" for the rest, app.py), tenants are names of
authenticated tenants, the first `max_tenants` of them, then "other" ("-" without a tenant).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from infercloud.config import ModelSpec
from infercloud.fleet.replicas import Replica, ReplicaSet
from infercloud.gateway.load_book import LoadBook
from infercloud.observability.metrics import LATENCY_BUCKETS

MAX_TENANT_LABELS = 100
MAX_RULE_LABELS = 100
NO_TENANT = "-"
OTHER_TENANT = "other"
AUTOSCALER_ACTIONS = ("scale_up", "scale_down", "hold")


class _ReplicaGauges:
    """Custom collector: outstanding requests and tokens, and readiness, of every replica at scrape time."""

    def __init__(self, fleet: ReplicaSet, book: LoadBook):
        self.fleet = fleet
        self.book = book

    def collect(self):
        labels = ["model", "replica"]
        families = {
            "outstanding_requests": GaugeMetricFamily("infercloud_gateway_replica_outstanding_requests",
                                                      "Requests the gateway has in flight on the replica",
                                                      labels=labels),
            "outstanding_tokens": GaugeMetricFamily("infercloud_gateway_replica_outstanding_tokens",
                                                    "Prompt + max new tokens in flight on the replica", labels=labels),
            "ready": GaugeMetricFamily("infercloud_gateway_replica_ready", "1 when the replica is routable",
                                       labels=labels),
        }
        for r in self.fleet.all():
            key, load = [r.model, r.replica_id], self.book.load(r.replica_id)
            families["outstanding_requests"].add_metric(key, load.outstanding_requests)
            families["outstanding_tokens"].add_metric(key, load.outstanding_tokens)
            families["ready"].add_metric(key, 1.0 if r.is_ready else 0.0)
        yield from families.values()


class BoundedLabels:
    """A label's value: the name itself for the first `cap` names seen, then "other" (None: "-"). Only names an
    operator made (tenants, policy rules) reach it, never a client's free text, and the cap bounds the series."""

    def __init__(self, cap: int = MAX_TENANT_LABELS):
        self.cap = cap
        self._seen: set[str] = set()

    def __call__(self, name: str | None) -> str:
        if name is None:
            return NO_TENANT
        if name in self._seen:
            return name
        if len(self._seen) < self.cap:
            self._seen.add(name)
            return name
        return OTHER_TENANT


def slo_targets(model: ModelSpec) -> tuple[float | None, float | None]:
    """The TTFT and TPOT targets a model's streams are held to: its autoscaling section's, else its own SLO's
    (as the controller reads them for the autoscaler)."""
    scaling = model.autoscaling
    ttft = scaling.ttft_slo_s if scaling is not None and scaling.ttft_slo_s is not None else model.slo.ttft_s
    tpot = scaling.tpot_slo_s if scaling is not None and scaling.tpot_slo_s is not None else model.slo.tpot_s
    return ttft, tpot


class GatewayMetrics:
    def __init__(self, fleet: ReplicaSet, book: LoadBook, models: Sequence[ModelSpec] = (),
                 max_tenants: int = MAX_TENANT_LABELS):
        self.registry = r = CollectorRegistry()
        self.tenant_label = BoundedLabels(max_tenants)
        self.rule_label = BoundedLabels(MAX_RULE_LABELS)
        self.slo = {m.name: slo_targets(m) for m in models}
        self.requests = Counter("infercloud_gateway_requests", "Requests by model, endpoint and HTTP status",
                                ["model", "endpoint", "status"], registry=r)
        self.tenant_requests = Counter("infercloud_gateway_tenant_requests",
                                       "Requests by model, tenant and HTTP status", ["model", "tenant", "status"],
                                       registry=r)
        self.routed_total = Counter("infercloud_gateway_routed", "Requests sent to each replica",
                                    ["model", "replica"], registry=r)
        self.retries = Counter("infercloud_gateway_retries", "Attempts beyond the first", ["model"], registry=r)
        self.migrations = Counter("infercloud_gateway_migrations", "Streams resumed on another replica",
                                  ["model"], registry=r)
        self.latency = Histogram("infercloud_gateway_response_start_seconds",
                                 "Time from request to the response head (first byte for streams)",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tenant_latency = Histogram("infercloud_gateway_tenant_response_start_seconds",
                                        "Time from request to the response head, by model and tenant",
                                        ["model", "tenant"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("infercloud_gateway_ttft_seconds", "Streams: request to first token, as the "
                              "gateway sees it", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("infercloud_gateway_tpot_seconds", "Streams: mean gap between tokens after the first, "
                              "as the gateway sees it", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.slo_total = Counter("infercloud_gateway_slo", "Finished streams of a model with SLO targets, by "
                                 "metric (ttft, tpot) and result (met, missed)", ["model", "metric", "result"],
                                 registry=r)
        self.decisions = Counter("infercloud_autoscaler_decisions", "Autoscaler decisions by action "
                                 f"({', '.join(AUTOSCALER_ACTIONS)})", ["model", "action"], registry=r)
        self.target_replicas = Gauge("infercloud_autoscaler_target_replicas", "Replicas the autoscaler wants",
                                     ["model"], registry=r)
        self.policy_decisions = Counter("infercloud_policy_decisions", "Policy decisions by rule (its name; the "
                                        f"first {MAX_RULE_LABELS} seen), mode (enforce, log_only) and action",
                                        ["rule", "mode", "action"], registry=r)
        self.cache = Counter("infercloud_gateway_cache", "Response-cache lookups by result (hit, semantic-hit, "
                             "miss, bypass: not cacheable or no-cache) and answers stored (stored)",
                             ["model", "result"], registry=r)
        for model, targets in self.slo.items():
            for metric, target in zip(("ttft", "tpot"), targets):
                if target is not None:
                    for result in ("met", "missed"):
                        self.slo_total.labels(model, metric, result)
        r.register(_ReplicaGauges(fleet, book))

    def request_done(self, model: str, endpoint: str, status: int, elapsed_s: float,
                     tenant: str | None = None) -> None:
        """One request answered (`model` a configured name or "other"; `tenant` the authenticated one's name)."""
        tenant = self.tenant_label(tenant)
        self.requests.labels(model, endpoint, str(status)).inc()
        self.latency.labels(model).observe(elapsed_s)
        self.tenant_requests.labels(model, tenant, str(status)).inc()
        self.tenant_latency.labels(model, tenant).observe(elapsed_s)

    def stream_done(self, model: str, ttft_s: float | None, tpot_s: float | None) -> None:
        """A stream finished (fleet/traffic.py's feed): its latencies, and whether they met the model's SLO."""
        targets = self.slo.get(model, (None, None))
        for metric, histogram, value, target in zip(("ttft", "tpot"), (self.ttft, self.tpot), (ttft_s, tpot_s),
                                                    targets):
            if value is None:
                continue
            histogram.labels(model).observe(value)
            if target is not None:
                self.slo_total.labels(model, metric, "met" if value <= target else "missed").inc()

    def autoscaler_decision(self, model: str, action: str, target_replicas: int) -> None:
        self.decisions.labels(model, action).inc()
        self.target_replicas.labels(model).set(target_replicas)

    def policy_decision(self, rule: str, mode: str, action: str) -> None:
        self.policy_decisions.labels(self.rule_label(rule), mode, action).inc()

    def routed(self, replica: Replica) -> None:
        self.routed_total.labels(replica.model, replica.replica_id).inc()

    def retry(self, model: str) -> None:
        self.retries.labels(model).inc()

    def migration(self, model: str) -> None:
        self.migrations.labels(model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
