"""TracingSpec: the `tracing:` section of the config (infercloud/observability/tracing.py does the tracing).
Kept apart so reading a config never imports OpenTelemetry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TracingSpec:
    """Traces over OTLP/HTTP (`tracing:` in the config; the workers a cloud starts get the same)."""

    otlp_endpoint: str | None = None          # e.g. http://127.0.0.1:4318/v1/traces; None: tracing off
    sample_ratio: float = 1.0                 # share of new traces kept (a client's sampled flag is followed)
    export_delay_s: float = 1.0               # spans wait at most this long to be sent, many per request

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError("tracing.sample_ratio must be between 0 and 1")
        if self.export_delay_s <= 0:
            raise ValueError("tracing.export_delay_s must be positive")
