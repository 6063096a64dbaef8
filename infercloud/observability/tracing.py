"""Tracing: OpenTelemetry spans of one request across processes, exported over OTLP/HTTP.

Off by default (`tracing.otlp_endpoint` unset): nothing is made, and every hook on the request path is an
`if tracing is None` away. On, each process has its own TracerProvider (service name `infercloud-gateway`
or `infercloud-worker`; no global provider is set), a batch exporter, and the W3C trace context:

  gateway   `gateway.request` (a child of the client's `traceparent` when it sends one; attributes: path,
            model, tenant, request id, status), with children `auth`, `policies`, `admission`, `cache`, and
            per replica tried a `route` (the choice: policy, replica, whether it was held while a model
            scaled from zero) then a `gateway.attempt` (replica, attempt number, outcome: completed, migrated,
            failed, aborted; a resumed stream's attempt says how many tokens it resumed after). Each attempt
            sends its own `traceparent`, so the worker's spans hang under the attempt that reached it. The
            gateway's own calls (a pipeline's stages, the Responses API's chat) are `gateway.request` spans
            under the current one, a stage's named by `infercloud.stage`.
  worker    `worker.request` (kind, request id, outcome, tokens) with `queue` (arrival to first scheduled),
            `prefill` (to the first token; attribute: preemptions) holding one `prefill.chunk` per engine step
            that computed part of the prompt (chunked prefill; attribute: tokens), and `decode` (to the end)
            holding `detokenize` (the detokenizer's time on the request's tokens, summed over the steps, drawn
            from the first token) and the chunks of a prompt recomputed after a preemption. All from the
            engine's own request timestamps (monotonic, converted to wall time once per span).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infercloud.observability.tracing_spec import TracingSpec


class Tracing:
    def __init__(self, spec: TracingSpec, service: str):
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}),
                                       sampler=ParentBased(TraceIdRatioBased(spec.sample_ratio)))
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=spec.otlp_endpoint), schedule_delay_millis=int(spec.export_delay_s * 1000)))
        self.tracer = self.provider.get_tracer("infercloud")
        self.propagator = TraceContextTextMapPropagator()

    @classmethod
    def of(cls, spec: TracingSpec, service: str) -> "Tracing | None":
        return cls(spec, service) if spec.otlp_endpoint else None

    def shutdown(self) -> None:
        self.provider.shutdown()   # sends what is batched

    # -- spans -----------------------------------------------------------------------------------------
    def start(self, name: str, parent: Context | None = None, attributes: Mapping | None = None,
              start_ns: int | None = None) -> Span:
        return self.tracer.start_span(name, context=parent, attributes=attributes, start_time=start_ns)

    def from_headers(self, headers: Mapping[str, str]) -> Context:
        """The caller's trace context (W3C traceparent), or an empty one."""
        return self.propagator.extract(headers)

    def headers_for(self, span: Span) -> dict[str, str]:
        """The traceparent (and tracestate) that make a callee's spans children of `span`."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    @contextmanager
    def child(self, name: str, attributes: Mapping | None = None) -> Iterator[Span]:
        """A span under the current one for the length of a block (an exception marks it an error)."""
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span


def current() -> Context:
    return otel_context.get_current()


def activate(span: Span) -> object:
    """Make `span` the current one (for the spans made under it); returns the token `deactivate` takes."""
    return otel_context.attach(trace.set_span_in_context(span))


def deactivate(token: object) -> None:
    otel_context.detach(token)


def finish(span: Span, error: str | None = None, end_ns: int | None = None, **attributes) -> None:
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)


def wall_ns(monotonic_s: float, now_monotonic: float | None = None, now_ns: int | None = None) -> int:
    """A time.monotonic() reading as wall-clock nanoseconds (what spans carry)."""
    now_monotonic = time.monotonic() if now_monotonic is None else now_monotonic
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns - int((now_monotonic - monotonic_s) * 1e9)
