"""GatewayMetrics: the gateway's Prometheus metrics (requests, retries, migrations, per-replica load)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from infercloud.fleet.replicas import Replica, ReplicaSet
from infercloud.gateway.load_book import LoadBook
from infercloud.worker.metrics import LATENCY_BUCKETS


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


class GatewayMetrics:
    def __init__(self, fleet: ReplicaSet, book: LoadBook):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("infercloud_gateway_requests", "Requests by model, endpoint and HTTP status",
                                ["model", "endpoint", "status"], registry=r)
        self.routed_total = Counter("infercloud_gateway_routed", "Requests sent to each replica",
                                    ["model", "replica"], registry=r)
        self.retries = Counter("infercloud_gateway_retries", "Attempts beyond the first", ["model"], registry=r)
        self.migrations = Counter("infercloud_gateway_migrations", "Streams resumed on another replica",
                                  ["model"], registry=r)
        self.latency = Histogram("infercloud_gateway_response_start_seconds",
                                 "Time from request to the response head (first byte for streams)",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache = Counter("infercloud_gateway_cache", "Response-cache lookups by result (hit, semantic-hit, "
                             "miss, bypass: not cacheable or no-cache) and answers stored (stored)",
                             ["model", "result"], registry=r)
        r.register(_ReplicaGauges(fleet, book))

    def routed(self, replica: Replica) -> None:
        self.routed_total.labels(replica.model, replica.replica_id).inc()

    def retry(self, model: str) -> None:
        self.retries.labels(model).inc()

    def migration(self, model: str) -> None:
        self.migrations.labels(model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
