"""The worker's HTTP app: OpenAI endpoints, health, metrics and state, with errors in OpenAI's JSON shape.

Bodies are parsed by hand (not by FastAPI's signature magic) so that every failure maps to the status
the OpenAI API uses: malformed JSON, unknown fields and bad values 400, unknown model 404, oversized
body 413, overload and draining 503 with Retry-After; anything unexpected 500 without a stack trace.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from infercloud.openai.errors import APIError, bad_request, draining, internal, model_not_found, too_large
from infercloud.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from infercloud.worker.worker import Worker

log = logging.getLogger("infercloud.worker")


class _Guard:
    """ASGI middleware: body size limit, 503 while draining, and the in-flight count used to drain."""

    def __init__(self, app, worker: Worker):
        self.app = app
        self.worker = worker

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


def _validation_error(exc: ValidationError) -> APIError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    field = loc[0] if loc else None
    if err["type"] == "extra_forbidden":
        return bad_request(f"Unsupported field: '{'.'.join(loc)}'. infercloud does not support it.", param=field,
                           code="unsupported_field")
    if err["type"] == "missing":
        return bad_request(f"Missing required field: '{'.'.join(loc)}'.", param=field)
    return bad_request(f"Invalid value for '{'.'.join(loc)}': {err['msg']}.", param=field)


async def _parse(request: Request, model: type[BaseModel]):
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from exc


def build_app(worker: Worker) -> _Guard:
    app = FastAPI(title="infercloud worker", docs_url=None, redoc_url=None)
    app.state.worker = worker

    def chat_service(model: str, endpoint: str):
        if model in worker.chat:
            return worker.chat[model]
        if model in worker.embeddings:
            raise bad_request(f"The model `{model}` is an embedding model and does not support {endpoint}.",
                              param="model")
        raise model_not_found(model)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), type=kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unhandled error")
        return internal().response()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _parse(request, ChatCompletionRequest)
        return await chat_service(body.model, "/v1/chat/completions").chat(body, request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _parse(request, CompletionRequest)
        return await chat_service(body.model, "/v1/completions").completion(body, request)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await _parse(request, EmbeddingRequest)
        if body.model not in worker.embeddings:
            if body.model in worker.chat:
                raise bad_request(f"The model `{body.model}` does not support /v1/embeddings.", param="model")
            raise model_not_found(body.model)
        return await worker.embeddings[body.model].embed(body)

    @app.get("/v1/models")
    async def models():
        created = int(worker.started_at)
        data = [{"id": name, "object": "model", "created": created, "owned_by": "infercloud",
                 "kind": state.get("kind"), "max_model_len": state.get("max_model_len")}
                for name, state in worker.model_states().items()]
        return {"object": "list", "data": data}

    @app.get("/health")
    async def health():
        healthy, body = worker.health()
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(worker.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/internal/state")
    async def internal_state():
        return {**worker.state(), "time": time.time()}

    return _Guard(app, worker)
