"""The gateway's HTTP app: the OpenAI endpoints proxied to replicas, plus health, metrics and state.

The gateway reads only what routing needs from a body (model, stream, the prompt for prefix hashing,
max_tokens, user) and leaves validation to the worker, whose 4xx answers pass through unchanged. Its own
errors: malformed JSON or no model 400, unknown model 404, oversized body 413, draining 503, no replica
able to serve 503; each in OpenAI's JSON shape, with an X-Request-Id assigned or propagated.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import Response

from infercloud.config import ServerConfig
from infercloud.controller.replicas import ReplicaSet
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.gateway.planner import RoutePlanner
from infercloud.gateway.proxy import Proxy
from infercloud.openai.asgi import (RequestGuard, install_error_handlers, install_ops_routes, read_json_object,
                                   until_disconnect)
from infercloud.openai.errors import APIError, bad_request, model_not_found

log = logging.getLogger("infercloud.gateway")

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


@dataclass
class Gateway:
    config: ServerConfig
    replicas: ReplicaSet
    planner: RoutePlanner
    proxy: Proxy | None = None            # set once the HTTP client exists (inside the event loop)
    metrics: GatewayMetrics | None = None
    draining: bool = False
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)

    async def handle(self, request: Request, path: str) -> Response:
        raw, body = await read_json_object(request)
        model = body.get("model")
        if not isinstance(model, str):
            raise bad_request("Missing required field: 'model'.", param="model")
        if model not in self.planner.routes:
            raise model_not_found(model)
        request_id = request.headers.get("x-request-id") or f"req-{uuid.uuid4().hex}"
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        plan = self.planner.plan(model, body, len(raw), request.headers.get("x-session-id"))
        start = time.perf_counter()
        status = 503
        try:
            if body.get("stream") is True and path != "/v1/embeddings":
                response = await self.proxy.stream(plan, path, body, headers)
            else:
                response = await until_disconnect(request, self.proxy.unary(plan, path, raw, headers))
            status = response.status_code
            return response
        except APIError as exc:
            exc.headers.setdefault("X-Request-Id", request_id)
            status = exc.status
            raise
        finally:
            self.metrics.requests.labels(model, path, str(status)).inc()
            self.metrics.latency.labels(model).observe(time.perf_counter() - start)

    def health(self) -> tuple[bool, dict]:
        models = {}
        for spec in self.config.models:
            replicas = self.replicas.of(spec.name)
            models[spec.name] = {"ready": sum(r.is_routable for r in replicas), "replicas": len(replicas)}
        status = "draining" if self.draining else "ok" if all(m["ready"] for m in models.values()) else "degraded"
        return not self.draining, {"status": status, "draining": self.draining, "models": models}

    def state(self) -> dict:
        return {"role": "gateway", "draining": self.draining, "in_flight": self.in_flight,
                "uptime_s": time.time() - self.started_at, "time": time.time(),
                "models": {s.name: {"routing": s.routing, "replicas": s.replicas, "external": list(s.external)}
                           for s in self.config.models},
                "replicas": [r.describe() for r in self.replicas.all()]}


def build_app(gateway: Gateway, lifespan=None) -> RequestGuard:
    app = FastAPI(title="infercloud gateway", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.gateway = gateway

    install_error_handlers(app, log)

    def proxied(path: str):
        async def endpoint(request: Request):
            return await gateway.handle(request, path)
        return endpoint

    for path in ENDPOINTS:  # plain Starlette routes: no FastAPI dependency solving on the hot path
        app.add_route(path, proxied(path), methods=["POST"])

    @app.get("/v1/models")
    async def models():
        created = int(gateway.started_at)
        data = [{"id": s.name, "object": "model", "created": created, "owned_by": "infercloud", "kind": s.kind,
                 "ready_replicas": len(gateway.replicas.routable(s.name))} for s in gateway.config.models]
        return {"object": "list", "data": data}

    install_ops_routes(app, gateway)

    return RequestGuard(app, gateway)
