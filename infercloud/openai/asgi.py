"""ASGI pieces shared by the worker and the gateway: the /v1 guard, disconnect watching, draining uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from infercloud.openai.errors import APIError, bad_request, draining, internal, too_large

log = logging.getLogger("infercloud.server")


async def read_json_object(request: Request) -> tuple[bytes, dict]:
    """The raw body and its JSON object; a 400 for anything that is not a JSON object."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    return raw, data


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


def install_ops_routes(app: FastAPI, server) -> None:
    """/health (200, or 503 when unhealthy), /metrics (Prometheus) and /internal/state (JSON).

    `server` (the worker or the gateway) has `health() -> (bool, dict)`, `metrics.render()` and `state()`.
    """

    @app.get("/health")
    async def health():
        healthy, body = server.health()
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/internal/state")
    async def internal_state():
        return server.state()


class RequestGuard:
    """ASGI middleware on /v1/*: body size limit (413), 503 while draining, the in-flight count used to drain.

    `server` is the worker or the gateway: anything with `config.max_body_bytes`, `draining` and `in_flight`.
    """

    def __init__(self, app, server):
        self.app = app
        self.worker = server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        limit = self.worker.config.max_body_bytes
        headers = dict(scope.get("headers") or [])
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
