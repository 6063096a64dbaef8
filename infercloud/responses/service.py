"""The Responses API routes, served through a chat completion call that the server hands in.

POST /v1/responses validates the body, loads the conversation of `previous_response_id` (the caller's
own, else 404; on a gateway with conversation limits, refused with a 400 `policy_violation` once the
conversation is past them: infercloud/policy/conversation.py), translates to a chat completion and calls `chat(request, body, session)`: on the
single-box worker that is the chat endpoint's own code, in-process; on the gateway it is the gateway's
handling of a chat completion (auth, admission, metering, routing, failover, stream migration), with
the conversation's root response id as the session key (so `session` routing keeps a conversation on one
replica; with `prefix_aware` routing a continuation goes to the replica holding its KV blocks, since its
prompt begins with the previous turn's prompt and answer). The chat answer (JSON, or an SSE stream) is
translated back; with `store` (the default) the response, its input items and the messages that continue
it are saved. GET/DELETE /v1/responses/{id} and GET /v1/responses/{id}/input_items answer the caller's
own responses only: another owner's id is a 404 exactly like an id that does not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from infercloud.config import ResponsesSpec
from infercloud.openai.asgi import no_query, page_of, read_json_object, request_id_of
from infercloud.openai.sse import ClosingStream
from infercloud.openai.errors import APIError, bad_request
from infercloud.openai.protocol import ChatCompletionRequest, validation_error
from infercloud.openai.responses import RESPONSES_BODIES, ResponsesRequest
from infercloud.policy.conversation import Conversation
from infercloud.responses.store import ResponseStore, StoredResponse
from infercloud.responses.stream import StreamFailed, StreamTranslator, sse
from infercloud.responses.translate import (chat_body, continuation, input_items, map_error, map_error_body, new_id,
                                            response_from_chat)
from infercloud.store.database import default_database_url, open_database

log = logging.getLogger("infercloud.responses")

ChatCall = Callable[[Request, dict, str], Awaitable[Response]]   # (request, chat body, session key) -> its answer
OwnerOf = Callable[[Request], Awaitable[str]]                    # the caller's owner key (a 401 when unknown)
Limits = Callable[[Request, Conversation], Awaitable[None]]      # a continuation's conversation: refused past limits

OPEN_OWNER = "open"           # the owner of every response where there is no tenancy
_DROPPED_HEADERS = {"content-length", "content-type"}   # the chat answer's headers not passed on


def not_found(response_id: str, param: str | None = None) -> APIError:
    return APIError(404, f"Response with id '{response_id[:100]}' not found.", param=param, code="not_found")


def store_unavailable() -> APIError:
    return APIError(503, "The response store is unavailable; retry shortly.", type="overloaded_error",
                    code="store_unavailable", headers={"Retry-After": "1"})


class ResponsesService:
    def __init__(self, spec: ResponsesSpec, chat: ChatCall, owner_of: OwnerOf, engine: sa.Engine | None = None,
                 clock: Callable[[], float] = time.time, limits: Limits | None = None):
        """`engine`: the database to use (the gateway's tenancy database) unless `spec.database` names one;
        without either, the SQLite file under the infercloud home, opened on first use."""
        self.spec = spec
        self.chat = chat
        self.owner_of = owner_of
        self.engine = None if spec.database else engine
        self.clock = clock
        self.limits = limits           # the gateway's conversation limits (policy rules), where there are any
        self._store: ResponseStore | None = None
        self._opening = asyncio.Lock()

    async def store(self) -> ResponseStore:
        async with self._opening:
            if self._store is None:
                engine = self.engine
                if engine is None:
                    try:
                        engine = await asyncio.to_thread(open_database, self.spec.database or default_database_url())
                    except sa.exc.SQLAlchemyError as exc:
                        log.warning("cannot open the response store: %s", exc)
                        raise store_unavailable() from exc
                self._store = ResponseStore(engine, self.spec.ttl_s, self.spec.purge_interval_s)
        return self._store

    async def _db(self, method: str, *args):
        store = await self.store()
        try:
            return await asyncio.to_thread(getattr(store, method), *args)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("response store: %s failed: %s", method, exc)
            raise store_unavailable() from exc

    # -- POST /v1/responses ------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        owner = await self.owner_of(request)
        _, data = await read_json_object(request)
        try:
            body = ResponsesRequest.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        history: list[dict] = []
        response_id = new_id("resp")
        root = response_id
        if body.previous_response_id is not None:
            previous: StoredResponse | None = await self._db("get", body.previous_response_id, owner)
            if previous is None:
                raise not_found(body.previous_response_id, param="previous_response_id")
            history, root = previous.messages, previous.root_id
            if self.limits is not None:
                turns, calls, tokens = await self._db("conversation", root, owner)
                await self.limits(request, Conversation(turns + 1, calls, tokens))
        items = input_items(body)
        created_at = int(self.clock())
        try:
            answer = await self.chat(request, chat_body(body, history, items), request.headers.get("x-session-id")
                                     or root)
        except APIError as exc:
            raise map_error(exc) from None
        headers = {k.lower(): v for k, v in answer.headers.items() if k.lower() not in _DROPPED_HEADERS}
        if answer.status_code >= 400 or body.stream != isinstance(answer, StreamingResponse):
            content = answer.body if hasattr(answer, "body") else b""
            return Response(map_error_body(content), status_code=answer.status_code if answer.status_code >= 400
                            else 502, media_type="application/json", headers=headers)

        async def save(response: dict) -> None:
            if body.store:
                await self._db("put", owner, response, body.model_dump(mode="json", by_alias=True, exclude_none=True),
                               items, continuation(history, items, response["output"]), root)

        if not body.stream:
            try:
                chat = json.loads(answer.body)
            except ValueError:
                chat = None
            if not isinstance(chat, dict):
                raise APIError(502, "The replica's chat completion was not a JSON object.", type="server_error",
                               code="bad_upstream_response")
            response = response_from_chat(response_id, body, created_at, chat)
            await save(response)
            return JSONResponse(response, headers=headers)
        chunks = answer.body_iterator
        try:
            first = await chunks.__anext__()   # started, so closing it (however this ends) runs its cleanup
        except StopAsyncIteration:
            first = ""
        translator = StreamTranslator(response_id, body, created_at)
        return ClosingStream(chunks, _events(_prepend(first, chunks), translator, save),
                            media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})

    # -- GET/DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items -------------------------
    async def retrieve(self, request: Request, response_id: str) -> dict:
        owner = await self.owner_of(request)
        no_query(request)
        return (await self._own(response_id, owner)).response

    async def delete(self, request: Request, response_id: str) -> dict:
        owner = await self.owner_of(request)
        no_query(request)
        if not await self._db("delete", response_id, owner):
            raise not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def list_input_items(self, request: Request, response_id: str) -> dict:
        owner = await self.owner_of(request)
        wanted = page_of(request)
        items = list((await self._own(response_id, owner)).input_items)
        if wanted.newest_first:
            items.reverse()
        after = wanted.after
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise bad_request(f"No input item {after[:100]!r} in response {response_id[:100]!r}.",
                                  param="after")
            items = items[ids.index(after) + 1:]
        page = items[:wanted.limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page)}

    async def _own(self, response_id: str, owner: str) -> StoredResponse:
        found = await self._db("get", response_id, owner)
        if found is None:
            raise not_found(response_id)
        return found


async def _prepend(first, rest: AsyncIterator) -> AsyncIterator:
    if first:
        yield first
    async for piece in rest:
        yield piece


async def _events(chunks: AsyncIterator, translator: StreamTranslator,
                  save: Callable[[dict], Awaitable[None]]) -> AsyncIterator[str]:
    """The chat stream's SSE -> the Responses events; the response is stored before its final event."""
    for event in translator.start():
        yield sse(event)
    buffer, done = "", False
    try:
        async for piece in chunks:
            buffer += piece.decode() if isinstance(piece, (bytes, bytearray, memoryview)) else piece
            *blocks, buffer = buffer.replace("\r\n", "\n").split("\n\n")
            for block in blocks:
                for line in block.split("\n"):
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        continue
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        continue
                    if isinstance(chunk, dict):
                        for event in translator.feed(chunk):
                            yield sse(event)
        if not done:
            raise StreamFailed("the chat stream ended before its end")
        events, response = translator.finish()
        for event in events:
            yield sse(event)
        await save(response)
    except (StreamFailed, APIError) as exc:
        for event in translator.fail(str(exc) if isinstance(exc, StreamFailed) else exc.message):
            yield sse(event)
        return
    yield sse(translator.final_event(response))


def install_routes(app: FastAPI, service: ResponsesService) -> None:
    """POST /v1/responses (a plain route: its body is read by hand) and the stored responses' routes."""
    app.add_route("/v1/responses", service.create, methods=["POST"])

    @app.get("/v1/responses/{response_id}")
    async def retrieve_response(response_id: str, request: Request):
        return await service.retrieve(request, response_id)

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, request: Request):
        return await service.delete(request, response_id)

    @app.get("/v1/responses/{response_id}/input_items")
    async def list_input_items(response_id: str, request: Request):
        return await service.list_input_items(request, response_id)


def install_on_worker(app: FastAPI, worker, chat_service) -> dict:
    """The single-box server's Responses API: chat served in-process by the model's LLMService, responses
    stored in `responses.database` (default: the SQLite file under the infercloud home), one owner.
    A cloud's workers (internal only) get none: their gateway serves it. Returns the bodies it takes."""
    if worker.config.internal_only:
        return {}

    async def chat(request: Request, body: dict, session: str) -> Response:
        try:
            parsed = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        return await (await chat_service(parsed.model, "/v1/responses")).chat(parsed, request)

    async def owner_of(request: Request) -> str:
        return OPEN_OWNER

    install_routes(app, ResponsesService(worker.config.responses, chat, owner_of))
    return dict(RESPONSES_BODIES)


def install_on_gateway(app: FastAPI, gateway) -> dict:
    """The gateway's Responses API: chat through `gateway.handle` (the same auth, admission, metering, routing,
    failover and migration as a chat completion), the conversation's root id as its session key; responses
    stored per tenant in the tenancy database (or `responses.database`). Returns the bodies it takes."""

    async def chat(request: Request, body: dict, session: str) -> Response:
        return await gateway.handle(request, "/v1/chat/completions", body=body, session_id=session)

    async def owner_of(request: Request) -> str:
        principal = await gateway.principal_of(request)
        return OPEN_OWNER if principal is None else f"tenant:{principal.tenant.id}"

    async def limits(request: Request, conversation: Conversation) -> None:
        principal = await gateway.principal_of(request)
        if gateway.governance is not None and principal is not None:
            await gateway.governance.conversation(principal, conversation, request_id_of(request))

    engine = gateway.tenancy.engine if gateway.tenancy is not None else None
    install_routes(app, ResponsesService(gateway.config.responses, chat, owner_of, engine, limits=limits))
    return dict(RESPONSES_BODIES)
