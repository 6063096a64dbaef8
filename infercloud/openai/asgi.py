"""ASGI pieces shared by the worker and the gateway: the guard (internal token on every non-public path; body
limit and draining on the API), strict JSON bodies, the schema of the bodies, disconnect watching, draining uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from infercloud.observability.dashboard import is_page as is_dashboard_page
from infercloud.openai.errors import APIError, bad_request, draining, internal, too_large

log = logging.getLogger("infercloud.server")


MAX_JSON_DEPTH = 64                                   # objects and arrays inside one another
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800-\udfff: a surrogate, maybe a lone one


async def read_json_object(request: Request) -> tuple[bytes, dict]:
    """The raw body and its JSON object; a 400 for anything that is not a strict JSON object of valid
    Unicode nested at most MAX_JSON_DEPTH deep."""
    raw = await request.body()
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from exc
    except RecursionError:
        raise bad_request(f"The request body nests objects and arrays deeper than {MAX_JSON_DEPTH} levels.",
                          code="too_deep") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH or _SURROGATE_ESCAPE.search(raw):
        _check_values(data)   # only a body that could nest too deep or hold a lone surrogate is walked
    return raw, data


def _refuse_constant(name: str):
    raise bad_request(f"The request body is not valid JSON: {name} is not a JSON number.")


def _check_values(data: dict) -> None:
    """A 400 naming the top-level field that nests deeper than MAX_JSON_DEPTH or holds a string that is not
    valid Unicode (a lone UTF-16 surrogate such as \\ud800, which no tokenizer or encoder can take)."""
    stack = [(value, 1, key) for key, value in data.items()]
    stack += [(key, 1, key) for key in data]
    while stack:
        value, depth, field = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request(f"'{_printable(field)}' holds a lone UTF-16 surrogate, which is not valid "
                                  "Unicode.", param=_printable(field), code="invalid_unicode") from None
        elif isinstance(value, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise bad_request(f"'{_printable(field)}' nests objects and arrays deeper than {MAX_JSON_DEPTH} "
                                  "levels.", param=_printable(field), code="too_deep")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                stack.append((item, depth + 1, field))
                if isinstance(key, str):
                    stack.append((key, depth + 1, field))


def _printable(field: str) -> str:
    return field.encode("utf-8", "backslashreplace").decode()[:100]


def install_error_handlers(app: FastAPI, logger: logging.Logger) -> None:
    """Every error leaves as OpenAI-style JSON: APIError as it is, HTTP errors typed, anything else a bare 500."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), type=kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        logger.exception("unhandled error")
        return internal().response()


def describe_bodies(app: FastAPI, bodies: dict[str, type[BaseModel]]) -> None:
    """Make /openapi.json list the JSON body of each POST route in `bodies` (path -> model).

    The routes read their bodies by hand (so every failure gets OpenAI's status and shape), which
    hides the bodies from FastAPI; this puts them back, with OpenAI's error shape as the default answer.
    """
    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, defs = models_json_schema([(m, "validation") for m in dict.fromkeys(bodies.values())],
                                         ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            error = {"description": "An OpenAI-style error: {\"error\": {message, type, param, code}}",
                     "content": {"application/json": {"schema": {"type": "object", "required": ["error"]}}}}
            for path, model in bodies.items():
                operation = schema.setdefault("paths", {}).setdefault(path, {}).setdefault("post", {})
                operation.setdefault("operationId", path.strip("/").replace("/", "_"))
                named = {p.get("name") for p in operation.get("parameters", []) if p.get("in") == "path"}
                operation.setdefault("parameters", []).extend(   # a plain route's path parameters, undeclared
                    {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                    for n in re.findall(r"{(\w+)}", path) if n not in named)
                operation["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
                operation["responses"] = {"200": {"description": "The result (JSON, or SSE when stream is true)"},
                                          "default": error}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def install_ops_routes(app: FastAPI, server) -> None:
    """/health (200, or 503 when unhealthy), /metrics (Prometheus) and /internal/state (JSON).

    `server` (the worker or the gateway) has `health() -> (bool, dict)`, `metrics.render()` and `state()`.
    """

    @app.get("/health")
    async def health():
        healthy, body = server.health()
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics():  # rendered off the event loop: a large registry must not stall /health
        return Response(await asyncio.to_thread(server.metrics.render), media_type=CONTENT_TYPE_LATEST)

    @app.get("/internal/state", include_in_schema=False)
    async def internal_state():
        return server.state()


PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/version", "/tokenize", "/detokenize"})  # the last 3: vLLM's
TOKENIZE_PATHS = frozenset({"/tokenize", "/detokenize"})   # outside /v1, and API bodies all the same
PUBLIC_PREFIXES = ("/v1/", "/admin/")   # the API (tenant keys where tenancy is on) and the admin API (admin keys)


def is_public(path: str, internal_only: bool) -> bool:
    """Whether a path is served without the internal token. Everything not listed here is internal: an
    unknown path too, so a route added later is private unless it is added here."""
    if path == "/health" or is_dashboard_page(path):   # the dashboard's page holds no data: its data is internal
        return True
    return not internal_only and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


def is_api(path: str) -> bool:
    """Whether a path takes API bodies: /v1/* and vLLM's /tokenize and /detokenize."""
    return path.startswith("/v1/") or path in TOKENIZE_PATHS


class RequestGuard:
    """ASGI middleware: the internal token on every path that is not public, then on the API (`is_api`): body
    size limit (413), 503 while draining, the in-flight count used to drain.

    `server` is the worker or the gateway: anything with `config.max_body_bytes`, `config.internal_only`,
    `draining`, `in_flight` and `async authorize_internal(path, authorization) -> APIError | None`.
    """

    def __init__(self, app, server):
        self.app = app
        self.worker = server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope.get("headers") or [])
        if not is_public(path, self.worker.config.internal_only):
            authorization = headers.get(b"authorization", b"").decode("latin-1") or None
            denied = await self.worker.authorize_internal(path, authorization)
            if denied is not None:
                return await denied.response()(scope, receive, send)
        if not is_api(path):
            return await self.app(scope, receive, send)
        limit = self.worker.config.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await too_large(limit).response()(scope, receive, send)
        if self.worker.draining:
            return await draining().response()(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(limit)
            return message

        self.worker.in_flight += 1
        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.worker.in_flight -= 1


async def until_disconnect(request: Request, work, poll_s: float = 0.2):
    """Await `work`, cancelling it if the client disconnects first (that aborts the engine request)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise asyncio.CancelledError("client disconnected")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class DrainingServer(uvicorn.Server):
    """First SIGTERM/SIGINT: start draining; exit once nothing is in flight or the timeout passes.

    A second signal exits at once (uvicorn's own behaviour).
    """

    def __init__(self, config: uvicorn.Config, server):
        """`server`: the worker or the gateway (`draining`, `in_flight`, `config.drain_timeout_s`)."""
        super().__init__(config)
        self.worker = server

    def handle_exit(self, sig, frame) -> None:
        if self.worker.draining:
            return super().handle_exit(sig, frame)
        self.worker.draining = True
        log.info("draining: %d requests in flight, up to %.0f s", self.worker.in_flight,
                 self.worker.config.drain_timeout_s)
        threading.Thread(target=self._exit_when_drained, name="drain", daemon=True).start()

    def _exit_when_drained(self) -> None:
        deadline = time.monotonic() + self.worker.config.drain_timeout_s
        while self.worker.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.worker.in_flight:
            log.warning("drain timeout: %d requests still in flight are cut", self.worker.in_flight)
        self.should_exit = True


MAX_REQUEST_ID = 80     # a longer X-Request-Id is replaced (the ledger keys rows by it)
MAX_LIST_LIMIT = 100    # a list route's `limit` at most


def request_id_of(request: Request) -> str:
    """The client's X-Request-Id, or a new one when it sent none or one too long."""
    request_id = request.headers.get("x-request-id") or ""
    return request_id if 0 < len(request_id) <= MAX_REQUEST_ID else f"req-{uuid.uuid4().hex}"


def no_query(request: Request, known: tuple[str, ...] = ()) -> None:
    """A query parameter a route does not take is a 400 naming it, never silently ignored."""
    for name in request.query_params:
        if name not in known:
            raise bad_request(f"Unsupported query parameter: '{name[:50]}'. infercloud does not support it.",
                              param=name[:50], code="unsupported_parameter")


@dataclass(frozen=True)
class Page:
    """A list route's query, as OpenAI's lists take it: order (newest first by default), limit, after."""

    newest_first: bool
    limit: int
    after: str | None


def page_of(request: Request, default_limit: int = 20) -> Page:
    """The page a list request asks for; another parameter or a bad value is a 400 naming it."""
    no_query(request, ("order", "limit", "after"))
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(f"Invalid value for 'order': {order[:20]!r}; use 'asc' or 'desc'.", param="order")
    raw_limit = query.get("limit", str(default_limit))
    if not (raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIST_LIMIT):
        raise bad_request(f"Invalid value for 'limit': use an integer from 1 to {MAX_LIST_LIMIT}.", param="limit")
    return Page(order == "desc", int(raw_limit), query.get("after"))
