"""The collections API over HTTP (/v1/collections...), and where a single box or a gateway installs it.

Each route finds the caller's owner first (a 401 on a gateway with tenancy and no valid key), then reads its
body by hand (so every failure is OpenAI's JSON with its status) and calls CollectionsService. The embedding
calls of one request share one request id: the client's X-Request-Id, else a new one.
"""

from __future__ import annotations

import calendar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from infercloud.collections.embed import CallContext
from infercloud.collections.protocol import (COLLECTIONS_BODIES, AddDocumentsRequest, CreateCollectionRequest,
                                             SearchRequest, filter_json)
from infercloud.collections.rows import CollectionRow, DocumentRow
from infercloud.collections.service import OPEN_OWNER, CollectionsService
from infercloud.gateway.calls import gateway_embed
from infercloud.openai.asgi import no_query, page_of, read_json_object, request_id_of
from infercloud.openai.protocol import validation_error
from infercloud.worker.calls import worker_embed


def unix(moment) -> int:
    return calendar.timegm(moment.utctimetuple())


def collection_json(row: CollectionRow) -> dict:
    return {"id": row.name, "object": "collection", "name": row.name, "embedding_model": row.embedding_model,
            "chunking": row.chunking.to_json(), "metadata": row.metadata, "created_at": unix(row.created_at),
            "num_documents": row.num_documents, "num_chunks": row.num_chunks}


def document_json(row: DocumentRow) -> dict:
    text = {} if row.text is None else {"text": row.text}
    return {"id": row.id, "object": "collection.document", **text, "metadata": row.metadata,
            "num_chunks": row.num_chunks, "created_at": unix(row.created_at)}


def usage_json(prompt_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}


def listing(data: list[dict], has_more: bool = False) -> dict:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


async def _body(request: Request, model: type[BaseModel]):
    no_query(request)
    _, data = await read_json_object(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def _context(request: Request) -> CallContext:
    return CallContext(request, request_id_of(request))


def install_routes(app: FastAPI, service: CollectionsService) -> None:
    """The routes, and `app.state.collections` = the service (what pipelines search through)."""
    app.state.collections = service
    async def create_collection(request: Request):
        owner = await service.owner_of(request)
        body = await _body(request, CreateCollectionRequest)
        return collection_json(await service.create(request, owner, body))

    async def add_documents(request: Request):
        owner = await service.owner_of(request)
        body = await _body(request, AddDocumentsRequest)
        name = request.path_params["name"]
        stored, tokens = await service.add_documents(_context(request), owner, name, body.documents)
        return {"object": "list", "data": [{"id": d.id, "object": "collection.document", "num_chunks": d.num_chunks}
                                           for d in stored], "usage": usage_json(tokens)}

    async def search(request: Request):
        owner = await service.owner_of(request)
        body = await _body(request, SearchRequest)
        name, where = request.path_params["name"], filter_json(body.filter)
        if body.vector is not None:
            found = await service.search_by_vector(owner, name, body.vector, body.top_k, where, body.unique_documents)
        else:
            found = await service.search(_context(request), owner, name, body.query, body.top_k, where,
                                         body.unique_documents)
        return {"object": "list", "data": [hit.to_json() for hit in found.hits],
                "usage": usage_json(found.prompt_tokens)}

    app.add_route("/v1/collections", _json(create_collection), methods=["POST"])
    app.add_route("/v1/collections/{name}/documents", _json(add_documents), methods=["POST"])
    app.add_route("/v1/collections/{name}/search", _json(search), methods=["POST"])

    @app.get("/v1/collections")
    async def list_collections(request: Request):
        owner = await service.owner_of(request)
        no_query(request)
        return listing([collection_json(row) for row in await service.list_collections(owner)])

    @app.get("/v1/collections/{name}")
    async def get_collection(name: str, request: Request):
        owner = await service.owner_of(request)
        no_query(request)
        return collection_json(await service.get(owner, name))

    @app.delete("/v1/collections/{name}")
    async def delete_collection(name: str, request: Request):
        owner = await service.owner_of(request)
        no_query(request)
        await service.delete(owner, name)
        return {"id": name, "object": "collection.deleted", "deleted": True}

    @app.get("/v1/collections/{name}/documents")
    async def list_documents(name: str, request: Request):
        owner = await service.owner_of(request)
        page = page_of(request)
        rows, has_more = await service.list_documents(owner, name, page.limit, page.after, page.newest_first)
        return listing([document_json(row) for row in rows], has_more)

    @app.get("/v1/collections/{name}/documents/{doc_id}")
    async def get_document(name: str, doc_id: str, request: Request):
        owner = await service.owner_of(request)
        no_query(request)
        return document_json(await service.get_document(owner, name, doc_id))

    @app.delete("/v1/collections/{name}/documents/{doc_id}")
    async def delete_document(name: str, doc_id: str, request: Request):
        owner = await service.owner_of(request)
        no_query(request)
        await service.delete_document(owner, name, doc_id)
        return {"id": doc_id, "object": "collection.document.deleted", "deleted": True}


def _json(handler):
    """A plain Starlette route's handler answering the dict it returns as JSON."""
    async def endpoint(request: Request):
        return JSONResponse(await handler(request))
    return endpoint


def install_on_worker(app: FastAPI, worker) -> dict:
    """The single box's collections: one owner ("open"), chunks embedded in-process by the worker's embedding
    model, stored in the Responses API's database (`responses.database`, default: the SQLite file under the
    infercloud home), so one setting places all the box's stored data. A cloud's workers (internal only) get
    none: their gateway serves it. Returns the bodies it takes."""
    if worker.config.internal_only:
        app.state.collections = None
        return {}

    async def owner_of(request: Request) -> str:
        return OPEN_OWNER

    async def models_of(request: Request) -> dict[str, str]:
        return {name: spec.kind for name, spec in worker.known.items()}

    install_routes(app, CollectionsService(worker_embed(worker), owner_of, models_of,
                                           database=worker.config.responses.database))
    return dict(COLLECTIONS_BODIES)


def install_on_gateway(app: FastAPI, gateway) -> dict:
    """The gateway's collections, per tenant ("tenant:<id>"; "open" without tenancy), chunks embedded through
    the gateway's own /v1/embeddings handling (the caller's key, limits, routing and metering), stored in
    `responses.database` when set, else the tenancy database, else the SQLite file under the infercloud home.
    Returns the bodies it takes."""

    async def owner_of(request: Request) -> str:
        principal = await gateway.principal_of(request)
        return OPEN_OWNER if principal is None else f"tenant:{principal.tenant.id}"

    async def models_of(request: Request) -> dict[str, str]:
        return {card["id"]: card["kind"] for card in gateway.model_cards(await gateway.principal_of(request))}

    engine = gateway.tenancy.engine if gateway.tenancy is not None else None
    install_routes(app, CollectionsService(gateway_embed(gateway), owner_of, models_of,
                                           database=gateway.config.responses.database, engine=engine))
    return dict(COLLECTIONS_BODIES)
