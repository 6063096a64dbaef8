"""Proxy: picks a replica for each request, sends it there, and retries elsewhere when it cannot be served.

Bodies: each request carries two bodies (gateway/facts.py `Upstream`), one for native workers (with the
gateway's `priority`, `service_tier`, `cache_salt` and usage options) and one for external replicas (the
client's, plus include_usage when metered).

Picking: the model's routing policy (router/) chooses among its ready replicas that this gateway has not
seen fail since their last passing probe (load_book.py), offered by region when the request has one
(router/regions.py: its own region first, the nearest with room after); a request bound to regions none
of whose replicas is up gets 503 `region_unavailable` at once, never another region. A model that scales
from zero and has no ready replica holds the request (bounded in number and time) while the controller
starts one.

Retry: a replica that cannot be reached, or answers 502/503/504, is left for another one (up to
`max_attempts` replicas, with a doubling backoff); one that cannot be reached leaves this gateway's
routing at once. When no replica can take it, the client gets 503 `no_replica_available` naming the model.

Metering: when a `RequestMeter` is given, each attempt that got a response ends in one usage event
(see gateway/accounting.py). Streams are relayed by relay.py, which migrates them when a replica breaks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from fastapi.responses import Response

from infercloud.config import GatewaySpec
from infercloud.fleet.replicas import Replica, ReplicaSet
from infercloud.fleet.traffic import Traffic
from infercloud.gateway.facts import Upstream
from infercloud.gateway.load_book import Lease, LoadBook
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.gateway.planner import Plan, RoutePlanner
from infercloud.gateway.relay import Relay, RelayResponse, upstream_message
from infercloud.observability.tracing import Tracing, finish
from infercloud.openai.errors import APIError
from infercloud.router.regions import RegionMap, regional_candidates

RETRYABLE_STATUS = frozenset({502, 503, 504})
MAX_STALE = 8   # routes to a pool worker that had just unloaded the model, per request, not counted as attempts


@dataclass
class Attempt:
    """A response open on one replica, and the load it holds there until `Proxy.end`."""

    replica: Replica
    response: aiohttp.ClientResponse
    lease: Lease
    span: object | None = None    # its `gateway.attempt` span, where tracing is on


def no_replica(model: str, attempts: int, last_error: str | None) -> APIError:
    detail = f" Last error: {last_error}." if last_error else ""
    return APIError(503, f"No replica of model `{model}` could take the request after {attempts} attempts.{detail}",
                    type="overloaded_error", code="no_replica_available", headers={"Retry-After": "1"})


class Proxy:
    def __init__(self, fleet: ReplicaSet, book: LoadBook, traffic: Traffic, planner: RoutePlanner,
                 client: aiohttp.ClientSession, spec: GatewaySpec, metrics: GatewayMetrics,
                 regions: RegionMap | None = None, internal_headers: dict[str, str] | None = None,
                 tracing: Tracing | None = None):
        self.fleet = fleet
        self.book = book
        self.traffic = traffic
        self.planner = planner
        self.client = client
        self.spec = spec
        self.metrics = metrics
        self.regions = regions or RegionMap()
        self.internal_headers = internal_headers or {}   # native workers answer only the internal token
        self.tracing = tracing                           # None: no spans (observability/tracing.py)

    # -- picking ---------------------------------------------------------------------------------------
    def candidates(self, plan: Plan, tried: set[str] = frozenset()) -> list[Replica]:
        """The replicas that may take the request now: ready, not seen failing, not tried, native if it must."""
        return [r for r in self.fleet.routable(plan.route.model) if r.replica_id not in tried and
                not self.book.is_out(r) and not (plan.native_only and r.is_external)]

    def pick(self, plan: Plan, tried: set[str] = frozenset()) -> Replica | None:
        candidates = {r.replica_id: r for r in self.candidates(plan, tried)}
        if not candidates:
            return None
        views = [self.book.view(r) for r in candidates.values()]
        if plan.route.region is not None or plan.route.allowed_regions is not None:
            views = regional_candidates(views, plan.route.region, plan.route.allowed_regions, self.regions,
                                        self.spec.spillover_outstanding)
        chosen = self.planner.routes[plan.route.model].policy.choose(plan.route, views)
        return candidates[chosen.replica_id] if chosen is not None else None

    def check_residency(self, plan: Plan) -> None:
        """A request bound to regions where no replica is up, while others are up elsewhere: a clear 503."""
        allowed, ready = plan.route.allowed_regions, self.fleet.routable(plan.route.model)
        if allowed is None:
            return
        elsewhere = sorted({str(r.region) for r in ready if r.region not in allowed})
        if elsewhere and not any(r.region in allowed for r in ready):
            raise APIError(503, f"No replica of model `{plan.route.model}` is up in the regions this request may be "
                           f"served in ({', '.join(sorted(allowed))}); replicas in {', '.join(elsewhere)} may not "
                           "serve it (data residency).", type="overloaded_error", code="region_unavailable",
                           headers={"Retry-After": "5"})

    async def _hold(self, plan: Plan, tried: set[str]) -> Replica:
        """Wait for a replica of a model that has none ready (the controller starts one when it sees requests
        held); bounded in number and time, each ending in a clear 503."""
        model = plan.route.model
        if self.traffic.held(model) >= self.spec.max_held:
            raise APIError(503, f"Model `{model}` is starting and already holds {self.traffic.held(model)} "
                           "requests; retry shortly.", type="overloaded_error", code="model_starting",
                           headers={"Retry-After": "5"})
        self.traffic.holding(model)
        deadline = asyncio.get_running_loop().time() + self.spec.hold_timeout_s
        try:
            while asyncio.get_running_loop().time() < deadline:
                replica = self.pick(plan, tried)
                if replica is not None:
                    return replica
                self.check_residency(plan)       # came up, but only where this request may not go
                await asyncio.sleep(0.02)
        finally:
            self.traffic.released(model)
        raise APIError(503, f"Model `{model}` has no ready replica: none started within "
                       f"{self.spec.hold_timeout_s:g} s.", type="overloaded_error", code="model_not_ready",
                       headers={"Retry-After": "5"})

    async def _route(self, plan: Plan, tried: set[str], trace_parent=None) -> Replica | None:
        """A replica for one attempt (None: none is ready); a model scaled to zero is waited for. With tracing,
        a `route` span: the routing policy, the replica chosen, and whether the request was held for one."""
        span = None if self.tracing is None else self.tracing.start("route", trace_parent, {
            "infercloud.routing": self.planner.routes[plan.route.model].spec.routing})
        replica, held, error = self.pick(plan, tried), False, None
        try:
            if replica is None:
                self.check_residency(plan)
                spec = self.planner.routes[plan.route.model].spec.autoscaling
                if spec is not None and not self.fleet.routable(plan.route.model):   # scales from zero: wait
                    held = True
                    replica = await self._hold(plan, tried)
            return replica
        except BaseException as exc:
            error = exc.message if isinstance(exc, APIError) else type(exc).__name__
            raise
        finally:
            if span is not None:
                finish(span, error, **{"infercloud.replica": replica.replica_id if replica is not None else None,
                                       "infercloud.held": held})

    # -- sending ---------------------------------------------------------------------------------------
    def failed(self, replica: Replica) -> None:
        """A request could not reach it: out of this gateway's routing until its next passing probe."""
        self.book.failed(replica)

    def end(self, attempt: Attempt, outcome: str = "completed") -> None:
        """The attempt is over: its connection closes (aborting it upstream if unfinished), its load leaves."""
        attempt.response.close()
        self.book.end(attempt.lease)
        if attempt.span is not None:
            finish(attempt.span, None if outcome in ("completed", "migrated") else outcome, outcome=outcome)

    async def open(self, plan: Plan, path: str, content: Callable[[Replica], bytes], headers: dict[str, str],
                   tried: set[str], meter=None, trace_parent=None, resumed: int = 0) -> Attempt:
        """Open a response on some replica (its body unread: the caller reads it and calls `end`). With tracing,
        each replica tried is a `gateway.attempt` span under `trace_parent` (default: the current span)."""
        backoff, last_error = self.spec.retry_backoff_s, None
        attempt, stale = -1, 0
        while attempt + 1 < self.spec.max_attempts:
            attempt += 1
            if attempt:
                self.metrics.retry(plan.route.model)
                await asyncio.sleep(backoff)
                backoff *= 2
            replica = await self._route(plan, tried, trace_parent)
            if replica is None:
                last_error = last_error or "no replica is ready"
                continue
            tried.add(replica.replica_id)
            lease = self.book.begin(replica, plan.route.prompt_block_hashes, plan.outstanding_tokens,
                                    self.planner.routes[plan.route.model].block_size)
            self.metrics.routed(replica)
            span, sent = None, self._headers(replica, headers)
            if self.tracing is not None:
                span = self.tracing.start("gateway.attempt", trace_parent, {
                    "infercloud.replica": replica.replica_id, "infercloud.attempt": len(tried),
                    "infercloud.resumed_tokens": resumed})
                sent = {**sent, **self.tracing.headers_for(span)}
            try:
                response = await self.client.post(replica.url + path, data=content(replica), headers=sent)
            except asyncio.CancelledError:  # the client left while the replica worked on it
                self.book.end(lease)
                if span is not None:
                    finish(span, "aborted", outcome="aborted")
                if meter is not None:
                    meter.lookup_later(self.client, replica, "aborted", None, self.internal_headers)
                raise
            except aiohttp.ClientError as exc:
                self.book.end(lease)
                self.failed(replica)
                last_error = f"{replica.replica_id} unreachable ({type(exc).__name__})"
                if span is not None:
                    finish(span, last_error, outcome="unreachable")
                continue
            if response.status in RETRYABLE_STATUS:
                body = await _read_and_close(response)
                self.book.end(lease)
                last_error = f"{replica.replica_id} answered {response.status}: {upstream_message(body)}"
                if span is not None:
                    finish(span, last_error, outcome="retried", status=response.status)
                if _code(body) == "model_not_loaded" and stale < MAX_STALE:   # a pool worker unloaded it:
                    stale += 1                         # out of routing now, and not a failed attempt: the
                    attempt -= 1                       # request is held until the model is loaded again
                    self.failed(replica)
                    self.traffic.want(plan.route.model)
                continue
            return Attempt(replica, response, lease, span)
        raise no_replica(plan.route.model, self.spec.max_attempts, last_error)

    def _headers(self, replica: Replica, headers: dict[str, str]) -> dict[str, str]:
        """A native worker gets the internal token; an external replica never sees it."""
        return headers if replica.is_external else {**headers, **self.internal_headers}

    # -- plain requests and streams --------------------------------------------------------------------
    async def unary(self, plan: Plan, path: str, upstream: Upstream, headers: dict[str, str],
                    meter=None) -> Response:
        tried: set[str] = set()
        while True:
            attempt = await self.open(plan, path, upstream.encode, headers, tried, meter)
            replica, response = attempt.replica, attempt.response
            try:
                content = await response.read()
            except aiohttp.ClientError:  # died while answering: nothing reached the client, so retry
                self.failed(replica)
                self.end(attempt, "failed")
                if len(tried) >= self.spec.max_attempts:
                    raise no_replica(plan.route.model, len(tried), f"{replica.replica_id} failed mid-response")
                continue
            except BaseException as exc:   # the client left (cancelled) while the replica worked on it, or worse
                self.end(attempt, "aborted")
                if meter is not None and isinstance(exc, asyncio.CancelledError):
                    meter.lookup_later(self.client, replica, "aborted", None, self.internal_headers)
                raise
            self.end(attempt, "completed" if response.status < 400 else "failed")
            if meter is not None:
                outcome = "completed" if response.status < 400 else "failed"
                meter.attempt_ended(replica.replica_id, _usage(content) if outcome == "completed" else None,
                                    outcome, response.status)
            return Response(content, status_code=response.status,
                            media_type=response.headers.get("content-type", "application/json"),
                            headers=_served_by(replica, headers))

    async def stream(self, plan: Plan, path: str, upstream: Upstream, headers: dict[str, str],
                     meter=None) -> Response:
        relay = Relay(self, plan, path, upstream, headers, meter)
        attempt = await self.open(plan, path, relay.content, headers, relay.tried, meter)
        if attempt.response.status != 200:  # a client error (400, 404, ...): pass it on as it is
            content = await _read_and_close(attempt.response)
            self.end(attempt, "failed")
            if meter is not None:
                meter.attempt_ended(attempt.replica.replica_id, None, "failed", attempt.response.status)
            return Response(content, status_code=attempt.response.status,
                            media_type=attempt.response.headers.get("content-type", "application/json"),
                            headers=_served_by(attempt.replica, headers))
        relay.attempt = attempt
        return RelayResponse(relay, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", **_served_by(attempt.replica, headers)})


async def _read_and_close(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except aiohttp.ClientError:
        return b""
    finally:
        response.close()


def _usage(content: bytes) -> dict | None:
    try:
        usage = json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def _served_by(replica: Replica, headers: dict[str, str]) -> dict[str, str]:
    """The response's headers: its request id, and the replica (and its region) that took it first."""
    served = {"X-Request-Id": headers["X-Request-Id"], "X-Infercloud-Replica": replica.replica_id}
    if replica.region is not None:
        served["X-Infercloud-Region"] = replica.region
    return served


def _code(body: bytes) -> str | None:
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
