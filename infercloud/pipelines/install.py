"""Where pipelines are served: a gateway (each stage through its own request handling: keys, limits,
routing, metering per stage) and a single box (each stage in-process). Both take the config's pipelines
and those made through the admin API (stored in the same database as the collections)."""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI, Request

from infercloud.collections.embed import CallContext
from infercloud.openai.asgi import request_id_of
from infercloud.pipelines.registry import PipelineRegistry
from infercloud.pipelines.runner import Calls
from infercloud.pipelines.trace import Passage
from infercloud.pipelines.service import PipelineService, install_routes
from infercloud.policy.audit import admin_change


def _retrieve(collections):
    """A retrieve stage's search: the caller's own collection, best chunk per document."""
    async def retrieve(ctx: CallContext, name: str, vector: np.ndarray, top_k: int, filter: dict | None):
        owner = await collections.owner_of(ctx.request)
        result = await collections.search_by_vector(owner, name, vector, top_k, filter, unique_documents=True)
        return [Passage(h.document_id, h.chunk_index, h.text, h.score, dict(h.metadata)) for h in result.hits]
    return retrieve


def _database(collections):
    """The collections' database (admin-made pipelines are kept beside them), opened on first use."""
    async def database():
        return (await collections.store()).engine
    return database


def _tpot_of(models):
    def tpot(name: str) -> float | None:
        spec = next((m for m in models if m.name == name), None)
        if spec is None:
            return None
        scaling = getattr(spec, "autoscaling", None)
        return spec.slo.tpot_s or (scaling.tpot_slo_s if scaling is not None else None)
    return tpot


def install_on_gateway(app: FastAPI, gateway, collections) -> PipelineService:
    from infercloud.gateway.admin import operator_principal
    from infercloud.gateway.calls import gateway_chat, gateway_embed

    config = gateway.config
    calls = Calls(gateway_embed(gateway), gateway_chat(gateway), _retrieve(collections), _tpot_of(config.models))
    registry = PipelineRegistry(config.pipelines, {m.name: m.kind for m in config.models}, _database(collections))
    service = PipelineService(registry, calls, request_id_of)

    async def authorize_admin(request: Request):
        """The caller's admin Principal; None for the internal token."""
        return await operator_principal(gateway, request)

    async def authorize_caller(request: Request) -> None:
        await gateway.principal_of(request)

    def audit(who, action: str, what: str, before: dict | None, after: dict | None) -> None:
        """Pipelines made and deleted, in the audit log (with tenancy: without it there is none)."""
        if gateway.tenancy is not None:
            what = what if who is not None else f"internal token: {what}"
            gateway.tenancy.audit.record([admin_change(who, action, what, before=before, after=after)])

    install_routes(app, service, authorize_admin, authorize_caller, audit)
    return service


def install_on_worker(app: FastAPI, worker, collections, chat_service) -> PipelineService:
    from infercloud.worker.calls import worker_chat, worker_embed

    config = worker.config
    calls = Calls(worker_embed(worker), worker_chat(chat_service), _retrieve(collections), _tpot_of(config.models))
    registry = PipelineRegistry(config.pipelines, {m.name: m.kind for m in config.models}, _database(collections))

    service = PipelineService(registry, calls, request_id_of)

    async def authorize_admin(request: Request) -> None:
        error = await worker.authorize_internal(request.url.path, request.headers.get("authorization"))
        if error is not None:
            raise error

    async def authorize_caller(request: Request) -> None:
        return None

    install_routes(app, service, authorize_admin, authorize_caller)
    return service
