"""The worker's HTTP app: OpenAI endpoints (and vLLM's /tokenize, /detokenize, /version), health, metrics and
state, with errors in OpenAI's JSON shape.

Bodies are parsed by hand (not by FastAPI's signature magic) so that every failure maps to the status
the OpenAI API uses: malformed JSON, unknown fields and bad values 400, unknown model 404, oversized
body 413, overload and draining 503 with Retry-After; anything unexpected 500 without a stack trace.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError

from infercloud import __version__
from infercloud.contracts import LoadReply, LoadRequest, ModelState, UnloadReply, UnloadRequest, UsageRecord
from infercloud.observability.dashboard import install_dashboard
from infercloud.openai.asgi import (RequestGuard, describe_bodies, install_error_handlers, install_ops_routes,
                                   read_json_object, until_disconnect)
from infercloud.openai.errors import APIError, bad_request, model_not_found
from infercloud.openai.protocol import (API_BODIES, ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
                                       validation_error)
from infercloud.openai.tokenize import TOKENIZE_BODIES, DetokenizeRequest, parse, parse_tokenize
from infercloud.collections.routes import install_on_worker as install_collections
from infercloud.pipelines.install import install_on_worker as install_pipelines
from infercloud.responses.service import install_on_worker
from infercloud.worker import tokenization
from infercloud.worker.worker import Worker

log = logging.getLogger("infercloud.worker")


async def _parse(request: Request, model: type[BaseModel]):
    _, data = await read_json_object(request)
    return _validate(model, data)


def _validate(model: type[BaseModel], data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def build_app(worker: Worker) -> RequestGuard:
    app = FastAPI(title="infercloud worker", docs_url=None, redoc_url=None)
    app.state.worker = worker

    async def chat_service(model: str, endpoint: str):
        kind = worker.kind(model)
        if kind is None:
            raise model_not_found(model)
        if kind == "embedding":
            raise bad_request(f"The model `{model}` is an embedding model and does not support {endpoint}.",
                              param="model")
        return await worker.service(model)

    install_error_handlers(app, log)

    pipelines = None   # set below, once the collections are installed

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        _, data = await read_json_object(request)
        model = data.get("model")
        if pipelines is not None and isinstance(model, str) and worker.kind(model) is None:
            spec = await pipelines.registry.get(model)   # a pipeline called as a model
            if spec is not None:
                return await pipelines.chat(request, spec, data)
        body = _validate(ChatCompletionRequest, data)
        return await (await chat_service(body.model, "/v1/chat/completions")).chat(body, request)

    responses_bodies = install_on_worker(app, worker, chat_service)   # the Responses API, over chat in-process
    collections_bodies = install_collections(app, worker)   # document collections, embedded in-process
    if not worker.config.internal_only:
        pipelines = install_pipelines(app, worker, app.state.collections, chat_service)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _parse(request, CompletionRequest)
        return await (await chat_service(body.model, "/v1/completions")).completion(body, request)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await _parse(request, EmbeddingRequest)
        kind = worker.kind(body.model)
        if kind is None:
            raise model_not_found(body.model)
        if kind == "chat":
            raise bad_request(f"The model `{body.model}` does not support /v1/embeddings.", param="model")
        service = await worker.service(body.model)
        return await until_disconnect(request, service.embed(body))  # a client that leaves stops its batches

    @app.get("/v1/models")
    async def models():
        states = worker.model_states()
        return {"object": "list", "data": [_model_card(worker, name, states) for name in worker.known]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id not in worker.known:
            raise model_not_found(model_id)
        return _model_card(worker, model_id, worker.model_states())

    @app.post("/internal/load", include_in_schema=False)
    async def load(request: Request):
        """Load a model here (unloading idle ones if it does not fit): contracts.LoadRequest -> LoadReply."""
        load = await _parse(request, LoadRequest)
        start = time.monotonic()
        evicted = await worker.ensure_loaded(load.model, pinned=load.pinned)
        return LoadReply(model=load.model, evicted=tuple(evicted), wait_s=round(time.monotonic() - start, 4),
                         memory_used_bytes=worker.memory_used_bytes,
                         memory_budget_bytes=worker.memory_budget_bytes).model_dump()

    @app.post("/internal/unload", include_in_schema=False)
    async def unload(request: Request):
        """Drain a model (its requests in flight finish, new ones get 503) and unload it: contracts.UnloadRequest."""
        name = (await _parse(request, UnloadRequest)).model
        if worker.kind(name) is None:
            raise model_not_found(name)
        unloaded = await worker.unload(name)
        return UnloadReply(model=name, unloaded=unloaded, memory_used_bytes=worker.memory_used_bytes).model_dump()

    @app.post("/internal/drain", include_in_schema=False)
    async def drain():
        """Stop as on SIGTERM: new requests get 503, those in flight finish, then the server exits."""
        if worker.on_drain is None:
            raise APIError(501, "This worker is not run by a server that can drain it.", code="not_supported")
        worker.on_drain()
        return {"draining": True, "in_flight": worker.in_flight}

    @app.get("/internal/usage/{request_id}", include_in_schema=False)
    async def request_usage(request_id: str):
        """What a request that ended here used, by the X-Request-Id it came with (for metering)."""
        found = worker.recent_usage.get(request_id)
        if found is None:
            raise APIError(404, f"No ended request {request_id!r} is known here.", code="not_found")
        return UsageRecord.model_validate(found).model_dump()

    _install_vllm_routes(app, worker)
    install_ops_routes(app, worker)
    install_dashboard(app, worker)   # /dashboard: the page (public) and /dashboard/data (the internal token)
    describe_bodies(app, {**API_BODIES, **TOKENIZE_BODIES, **responses_bodies, **collections_bodies})

    return RequestGuard(app, worker)


def _model_card(worker: Worker, name: str, states: dict[str, ModelState]) -> dict:
    """A model as GET /v1/models lists it (OpenAI's fields, then infercloud's)."""
    return {"id": name, "object": "model", "created": int(worker.started_at), "owned_by": "infercloud",
            "kind": worker.known[name].kind, "max_model_len": states[name].max_model_len if name in states else None,
            "loaded": name in states, "random_weights": worker.is_random(name)}


def _install_vllm_routes(app: FastAPI, worker: Worker) -> None:
    """vLLM's /tokenize and /detokenize (a model's tokenizer, chat or embedding) and /version."""

    async def known_service(model: str):
        if worker.kind(model) is None:
            raise model_not_found(model)
        return await worker.service(model)

    @app.post("/tokenize")
    async def tokenize(request: Request):
        _, data = await read_json_object(request)
        body = parse_tokenize(data)
        return await tokenization.tokenize(await known_service(body.model), body)

    @app.post("/detokenize")
    async def detokenize(request: Request):
        _, data = await read_json_object(request)
        body = parse(DetokenizeRequest, data)
        return await tokenization.detokenize(await known_service(body.model), body)

    @app.get("/version")
    async def version():
        return {"version": __version__}

