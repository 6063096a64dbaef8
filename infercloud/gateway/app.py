"""The gateway's HTTP app: the OpenAI endpoints (and vLLM's /tokenize, /detokenize) proxied to replicas, plus
model cards, /version, health, metrics and state.

The gateway parses each request once into its facts (gateway/facts.py: model, tier, region, max new
tokens, session, salt) and reads no more of a body than routing and admission need; it leaves validation
to the worker, whose 4xx answers pass through unchanged. With tenancy, every /v1 request is
authenticated and admitted first (gateway/accounting.py) and metered to the end. Its own errors: missing or bad key 401, a model or
tier the tenant may not use 403, malformed JSON or no model 400, unknown model 404, oversized body 413,
rate limits and budgets 429, draining 503, no replica able to serve 503; each in OpenAI's JSON shape,
with an X-Request-Id assigned or propagated.

The tier a request runs at (the tenant's, or the one it asks for within it) goes to native workers as
`service_tier` and its `priority`, so their answers name it; external replicas never see either.

/tokenize and /detokenize are authenticated like /v1 requests (a tenant's own models only), neither
metered nor rate limited, and answered by a native replica of the model; /version by the gateway itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cached_property

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from infercloud import __version__
from infercloud.config import ServerConfig
from infercloud.contracts import SyncReply, SyncReport
from infercloud.fleet.replicas import ReplicaSet
from infercloud.fleet.traffic import Traffic
from infercloud.gateway.accounting import Tenancy
from infercloud.gateway.admin import install_admin_routes
from infercloud.gateway.audit_routes import install_audit_routes
from infercloud.gateway.admin_bodies import ADMIN_BODIES
from infercloud.gateway.admin_policies import POLICY_BODIES, install_policy_routes
from infercloud.gateway.admin_evaluations import install_evaluation_routes
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.gateway.planner import Plan, RoutePlanner
from infercloud.gateway.load_book import LoadBook
from infercloud.gateway.facts import FactsParser, Upstream, upstream_for
from infercloud.gateway.proxy import Proxy
from infercloud.internal_token import shows_token
from infercloud.models.catalog import resolve_model
from infercloud.models.random_model import is_random_weights
from infercloud.tenancy.admission import Principal
from infercloud.openai.asgi import (TOKENIZE_PATHS, RequestGuard, describe_bodies, install_error_handlers,
                                   install_ops_routes, read_json_object, request_id_of, until_disconnect)
from infercloud.openai.errors import APIError, bad_request, forbidden, internal_token_required, model_not_found
from infercloud.openai.protocol import API_BODIES, USAGE_KEY_HEADER
from infercloud.openai.tokenize import TOKENIZE_BODIES
from infercloud.cache.response_cache import CACHE_HEADER
from infercloud.gateway.caching import GatewayCache
from infercloud.gateway.governance import Governance
from infercloud.gateway.sampling import Sampler
from infercloud.observability.dashboard import DATA_PATH as DASHBOARD_DATA, GatewayBoard, install_dashboard
from infercloud.observability.tracing import Tracing, activate, deactivate, finish
from opentelemetry.trace import get_current_span as current_span
from infercloud.collections.routes import install_on_gateway as install_collections
from infercloud.pipelines.install import install_on_gateway as install_pipelines
from infercloud.pipelines.service import PipelineService
from infercloud.pipelines.spec import PipelineSpec
from infercloud.responses.service import install_on_gateway
from infercloud.router.base import RouteRequest

log = logging.getLogger("infercloud.gateway")


async def _ending(span, events: AsyncIterator) -> AsyncIterator:
    """A stream's events; its request span ends when the stream does."""
    try:
        async for event in events:
            yield event
    finally:
        finish(span)

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
@dataclass
class Gateway:
    config: ServerConfig
    fleet: ReplicaSet                     # read only: the controller (or the link mirroring it) writes it
    traffic: Traffic
    book: LoadBook
    planner: RoutePlanner
    proxy: Proxy | None = None            # set once the HTTP client exists (inside the event loop)
    metrics: GatewayMetrics | None = None
    tenancy: Tenancy | None = None        # None: open (loopback only), no ledger
    draining: bool = False
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)
    control_state: Callable[[], dict] | None = None   # targets, pool workers, nodes: the controller's or a copy
    sync: Callable[[SyncReport], SyncReply] | None = None   # set where this gateway runs the controller
    pipelines: PipelineService | None = None  # pipelines called as models (infercloud/pipelines/), set by build_app
    dashboard: GatewayBoard | None = None     # what /dashboard shows (observability/dashboard.py), set by build_app
    cache: GatewayCache | None = None         # response caches (config `cache`), set by build_app when on
    governance: Governance | None = None      # policy rules per tenant (infercloud/policy/), set with tenancy
    sampler: Sampler | None = None            # hands answers to continuous evaluation (config `evaluations`)
    tracing: Tracing | None = None            # OpenTelemetry spans (config `tracing`), set by serve_cloud when on

    @cached_property
    def facts(self) -> FactsParser:
        """Parses each request once (gateway/facts.py); made on first use, once `tenancy` is set."""
        return FactsParser(self.config, self.planner.routes, self.tenancy)

    def is_random(self, name: str) -> bool:
        """Whether a model's folder holds random weights (made by `infercloud models create-random`)."""
        spec = next(s for s in self.config.models if s.name == name)
        try:
            return is_random_weights(resolve_model(spec.source))
        except (LookupError, OSError):
            return False

    async def handle(self, request: Request, path: str, body: dict | None = None,
                     session_id: str | None = None, request_id: str | None = None,
                     stage: str | None = None, deadline_s: float | None = None) -> Response:
        """Serve one API request. `body`, `session_id`, `request_id` and `stage`: a request the gateway made
        itself (the chat completion of a Responses API request, infercloud/responses/, with its session key;
        a pipeline's stage, infercloud/pipelines/, under the pipeline's request id, with the deadline of its
        first token). With tracing, it is one `gateway.request` span: a child of the client's traceparent, or
        of the current span for the gateway's own calls; a stream's span ends with the stream."""
        request_id = request_id or request_id_of(request)
        if self.tracing is None:
            return await self._handle(request, path, body, session_id, request_id, stage, deadline_s)
        parent = self.tracing.from_headers(request.headers) if body is None else None
        span = self.tracing.start("gateway.request", parent, {"http.route": path, "infercloud.request_id": request_id,
                                                              **({"infercloud.stage": stage} if stage else {})})
        token, response, error = activate(span), None, None
        try:
            response = await self._handle(request, path, body, session_id, request_id, stage, deadline_s)
            return response
        except APIError as exc:
            error = f"{exc.status} {exc.code or exc.type}"
            span.set_attribute("http.status_code", exc.status)
            raise
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            deactivate(token)
            if isinstance(response, StreamingResponse) and response.status_code == 200:
                response.body_iterator = _ending(span, response.body_iterator)
            else:
                finish(span, error, **({"http.status_code": response.status_code} if response is not None else {}))

    def _step(self, name: str):
        """A child span of the request's for one step (auth, policies, admission, cache); nothing when off."""
        return self.tracing.child(name) if self.tracing is not None else contextlib.nullcontext()

    async def _handle(self, request: Request, path: str, body: dict | None, session_id: str | None,
                      request_id: str, stage: str | None, deadline_s: float | None) -> Response:
        start = time.perf_counter()
        model, status, meter, principal, answer = "-", 503, None, None, None
        try:
            with self._step("auth"):
                principal = await self.tenancy.authenticate(request.headers.get("authorization")) \
                    if self.tenancy is not None else None
            if body is None:
                raw, body = await read_json_object(request)
                pipeline = await self._pipeline(path, body)
                if pipeline is not None:
                    return self._sampled(pipeline.name, body, principal, request_id,
                                         await self.pipelines.chat(request, pipeline, body))
            else:
                raw = json.dumps(body).encode()
            facts = self.facts.parse(body, path, len(raw), principal, request.headers.get("x-infercloud-region"),
                                     session_id or request.headers.get("x-session-id"))
            if deadline_s is not None:
                facts = dataclasses.replace(facts, deadline_s=deadline_s)
            watch = None
            if self.governance is not None and principal is not None:
                with self._step("policies"):
                    facts, watch = await self.governance.screen(principal, facts, request_id)
            model = facts.model
            if self.tracing is not None:
                current_span().set_attributes({"infercloud.model": model, "infercloud.tenant": facts.tenant or "-"})
            self.traffic.arrived(model)
            plan = self.planner.plan(facts)
            if principal is not None:
                with self._step("admission"):
                    meter = await self.tenancy.admit(principal, facts, plan, request_id, stage)
            lookup = None
            if self.cache is not None and stage is None:
                with self._step("cache"):
                    lookup = await self.cache.lookup(request, facts, request_id)
            if lookup is not None and lookup.hit is not None:
                response = self.cache.answer_hit(lookup, facts, request_id, meter)
                if watch is not None:
                    response = self.governance.guard(response, watch)
                response = self._sampled(model, facts.body, principal, request_id, response, stage)
                status, answer = response.status_code, response
                if principal is not None:
                    response.headers.update(self.tenancy.headers(principal))
                return response
            storing = self.cache is not None and self.cache.may_store(request, lookup)
            upstream = upstream_for(facts, metered=meter is not None or storing)
            headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
            if meter is not None:
                headers[USAGE_KEY_HEADER] = meter.usage_key
            if facts.stream:
                response = await self.proxy.stream(plan, path, upstream, headers, meter)
                if isinstance(response, StreamingResponse):
                    meter = None  # the stream's relay closes it when the stream ends
            else:
                response = await until_disconnect(request, self.proxy.unary(plan, path, upstream, headers, meter))
            if lookup is not None:
                response.headers[CACHE_HEADER] = lookup.header
                if storing:
                    self.cache.store_answer(lookup, response)
            if watch is not None:
                response = self.governance.guard(response, watch)
            response = self._sampled(model, facts.body, principal, request_id, response, stage)
            status, answer = response.status_code, response
            if principal is not None:
                response.headers.update(self.tenancy.headers(principal))
            return response
        except APIError as exc:
            exc.headers.setdefault("X-Request-Id", request_id)
            status, answer = exc.status, exc
            if meter is not None and not meter.events and not meter.pending_lookups:
                meter.attempt_ended(None, None, "failed", exc.status)  # no replica could take it
            raise
        finally:
            if meter is not None:
                meter.close()
            self._count(model, path, status, start, principal, answer)

    def _sampled(self, target: str, body: dict, principal: Principal | None, request_id: str, response: Response,
                 stage: str | None = None) -> Response:
        """A client's answer, handed to continuous evaluation when drawn (a pipeline's stages are not: the
        pipeline's answer is)."""
        if self.sampler is None or stage is not None:
            return response
        return self.sampler.watch(target, body, principal.tenant.id if principal else None, request_id, response)

    async def _pipeline(self, path: str, body: dict) -> PipelineSpec | None:
        """The pipeline a client's chat completion names as its model, if it names one (not a served model)."""
        model = body.get("model")
        if path != "/v1/chat/completions" or self.pipelines is None or not isinstance(model, str) \
                or model in self.planner.routes:
            return None
        return await self.pipelines.registry.get(model)

    async def forward(self, request: Request, path: str) -> Response:
        """/tokenize and /detokenize: authenticated, not metered or rate limited, sent to a native replica."""
        request_id, start = request_id_of(request), time.perf_counter()
        model, status, principal, answer = "-", 503, None, None
        try:
            principal = await self.principal_of(request)
            _, body = await read_json_object(request)
            model = self.facts.model(body, principal)
            self._check_native(model, path)
            region, allowed = self.facts.region(principal, request.headers.get("x-infercloud-region"))
            route = RouteRequest(model, tenant=principal.tenant.name if principal else None, region=region,
                                 allowed_regions=allowed)
            headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
            response = await until_disconnect(request, self.proxy.unary(Plan(route, native_only=True), path,
                                                                        Upstream(body, body), headers))
            status, answer = response.status_code, response
            return response
        except APIError as exc:
            exc.headers.setdefault("X-Request-Id", request_id)
            status, answer = exc.status, exc
            raise
        finally:
            self._count(model, path, status, start, principal, answer)

    def _check_native(self, model: str, path: str) -> None:
        """A model that only external replicas serve has no replica that surely answers `path`: a clear 400."""
        spec = self.planner.routes[model].spec
        if spec.external and spec.replicas == 0 and spec.autoscaling is None and spec.pool is None:
            raise bad_request(f"The model `{model}` is served by external replicas only; {path} is answered by "
                              "infercloud's own workers.", param="model", code="not_supported")

    def _count(self, model: str, path: str, status: int, start: float, principal: Principal | None,
               answer: Response | APIError | None = None) -> None:
        """Every answered request: the metrics, and the dashboard (an error's code with its status)."""
        label = model if model in self.planner.routes else "other"   # labels take configured names only
        self.metrics.request_done(label, path, status, time.perf_counter() - start,
                                  principal.tenant.name if principal is not None else None)
        if self.dashboard is not None:
            self.dashboard.request_done(label, path, status, principal.tenant.name if principal is not None else None,
                                        answer)

    async def authorize_internal(self, path: str, authorization: str | None) -> APIError | None:
        """The internal plane needs the internal token; /metrics and /dashboard/data also answer an admin key."""
        token = self.config.internal_token
        if token is not None and shows_token(authorization, token):
            return None
        if path in ("/metrics", DASHBOARD_DATA) and self.tenancy is not None and authorization:
            try:
                principal = await self.tenancy.authenticate(authorization)
            except APIError as exc:
                return exc
            if principal.key.is_admin:
                return None
            return forbidden(f"{path} needs an admin key or the internal token.", code="admin_key_required")
        return internal_token_required()

    def model_cards(self, principal: Principal | None) -> list[dict]:
        """The models a tenant may use (all without tenancy), as GET /v1/models lists them."""
        visible = [s for s in self.config.models if principal is None or principal.tenant.may_use(s.name)]
        return [{"id": s.name, "object": "model", "created": int(self.started_at), "owned_by": "infercloud",
                 "kind": s.kind, "ready_replicas": len(self.fleet.routable(s.name)),
                 "random_weights": self.is_random(s.name)} for s in visible]

    async def principal_of(self, request: Request) -> Principal | None:
        """The request's tenant and key (a 401 for a missing or bad key); None without tenancy."""
        if self.tenancy is None:
            return None
        return await self.tenancy.authenticate(request.headers.get("authorization"))

    def health(self) -> tuple[bool, dict]:
        models = {}
        for spec in self.config.models:
            replicas = self.fleet.of(spec.name)
            models[spec.name] = {"ready": sum(r.is_ready for r in replicas), "replicas": len(replicas)}
        for target, evaluators in (self.sampler.evaluation.degraded() if self.sampler else {}).items():
            models.setdefault(target, {})["degraded_evaluators"] = evaluators   # a model's or a pipeline's
        healthy = all(m.get("ready", True) and "degraded_evaluators" not in m for m in models.values())
        status = "draining" if self.draining else "ok" if healthy else "degraded"
        return not self.draining, {"status": status, "draining": self.draining, "models": models}

    def state(self) -> dict:
        return {"role": "gateway", "draining": self.draining, "in_flight": self.in_flight,
                "uptime_s": time.time() - self.started_at, "time": time.time(),
                "models": {s.name: {"routing": s.routing, "replicas": s.replicas, "external": list(s.external)}
                           for s in self.config.models},
                "replicas": [{**r.record().model_dump(), **self.book.describe(r)} for r in self.fleet.all()],
                **(self.control_state() if self.control_state is not None else {})}


def build_app(gateway: Gateway, lifespan=None) -> RequestGuard:
    app = FastAPI(title="infercloud gateway", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.gateway = gateway

    install_error_handlers(app, log)

    def proxied(path: str):
        async def endpoint(request: Request):
            return await gateway.handle(request, path)
        return endpoint

    def forwarded(path: str):
        async def endpoint(request: Request):
            return await gateway.forward(request, path)
        return endpoint

    for path in ENDPOINTS:  # plain Starlette routes: no FastAPI dependency solving on the hot path
        app.add_route(path, proxied(path), methods=["POST"])

    for path in TOKENIZE_PATHS:
        app.add_route(path, forwarded(path), methods=["POST"])

    @app.get("/v1/models")
    async def models(request: Request):   # a tenant sees the models it may use
        return {"object": "list", "data": gateway.model_cards(await gateway.principal_of(request))}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):   # another tenant's model is as unknown as a missing one
        cards = [c for c in gateway.model_cards(await gateway.principal_of(request)) if c["id"] == model_id]
        if not cards:
            raise model_not_found(model_id)
        return cards[0]

    @app.get("/version")
    async def version():
        return {"version": __version__}

    @app.post("/internal/sync", include_in_schema=False)
    async def sync(request: Request):
        """For gateways that share this one's controller (gateway/link.py)."""
        if gateway.sync is None:
            raise APIError(404, "This gateway runs no controller (it links to another).", code="not_found")
        _, body = await read_json_object(request)
        try:
            report = SyncReport.model_validate(body)
        except ValidationError as exc:
            raise bad_request(f"Invalid sync report: {exc.errors()[0]['msg']}.") from None
        return gateway.sync(report).model_dump()

    install_admin_routes(app, gateway)
    install_policy_routes(app, gateway)
    install_evaluation_routes(app, gateway)
    install_audit_routes(app, gateway)
    install_ops_routes(app, gateway)
    install_dashboard(app, gateway)   # /dashboard: the page (public) and /dashboard/data (as /metrics)
    responses_bodies = install_on_gateway(app, gateway)   # the Responses API, over handle() in-process
    collections_bodies = install_collections(app, gateway)   # per tenant, embedded through handle()
    gateway.pipelines = install_pipelines(app, gateway, app.state.collections)
    # the workers' bodies (passed on), the Responses API's, the collections' and the admin API's
    describe_bodies(app, {**API_BODIES, **TOKENIZE_BODIES, **responses_bodies, **collections_bodies, **ADMIN_BODIES,
                         **POLICY_BODIES})

    return RequestGuard(app, gateway)
