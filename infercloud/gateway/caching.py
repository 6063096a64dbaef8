"""The gateway's response caches on the request path: looked up after admission, a hit answered (JSON or an SSE
stream) and billed as a cache hit, a miss's answer stored once it is complete.

  lookup    CacheRequest from the request's facts (namespace: the tenant's, or its cache group's); the
            semantic cache embeds the last user turn through the gateway's own /v1/embeddings handling
            (the tenant's key and limits, booked under the request id with stage "cache"). Cache-Control:
            no-cache skips the lookup (the answer still refreshes the cache), no-store skips storing.
  hit       the stored answer with a new id: JSON, or a stream of chunks with usage when asked; one ledger
            row, outcome `cache_hit`, the tokens the client is told, no device-seconds, priced at the model's
            `cache_hit_per_mtok`. Header X-Infercloud-Cache: hit | semantic-hit | miss.
  miss      a JSON answer is stored from its body; a stream from the chunks the client was sent, with the
            usage the replica reported (native replicas are asked for it whenever the answer may be stored).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from infercloud.cache.keys import may_store, wants_cache
from infercloud.cache.replay import IncompleteStream, collect_stream, replay_json, replay_sse, wants_usage
from infercloud.cache.response_cache import CACHE_HEADER, CacheRequest, Lookup, ResponseCache
from infercloud.collections.embed import CallContext, Embed

log = logging.getLogger("infercloud.gateway")


class GatewayCache:
    def __init__(self, cache: ResponseCache, embed: Embed, count: Callable[[str, str], None],
                 clock: Callable[[], float] = time.time):
        self.cache = cache
        self.embed = embed                    # the gateway's own embeddings path (gateway/calls.py)
        self.count = count                    # (model, result) -> the metric
        self.clock = clock
        self._storing: set[asyncio.Task] = set()

    def spawn(self, coro) -> None:
        """Store in the background: the client's answer never waits for the cache."""
        task = asyncio.get_running_loop().create_task(coro)
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def close(self) -> None:
        if self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)
        await self.cache.close()

    async def lookup(self, request: Request, facts, request_id: str) -> Lookup | None:
        """None where the request is not a completion (embeddings are not cached)."""
        if not facts.is_generation:
            return None
        spec = self.cache.spec.semantic

        async def embed(texts: list[str]):
            ctx = CallContext(request, request_id, "cache")
            return (await self.embed(ctx, spec.embedding_model, texts)).vectors

        lookup = await self.cache.lookup(CacheRequest(self.cache.namespace(facts.tenant), facts.model, facts.body,
                                                      facts.path, facts.max_new_tokens),
                                         embed, read=wants_cache(request.headers))
        self.count(facts.model, lookup.status)
        return lookup

    def may_store(self, request: Request, lookup: Lookup | None) -> bool:
        return lookup is not None and lookup.hit is None and (lookup.exact_key is not None or
                                                              lookup.semantic is not None) \
            and may_store(request.headers)

    def answer_hit(self, lookup: Lookup, facts, request_id: str, meter) -> Response:
        reply = lookup.hit.reply
        prefix = "chatcmpl" if reply.is_chat else "cmpl"
        response_id, created = f"{prefix}-{uuid.uuid4().hex}", int(self.clock())
        usage = dict(reply.usage or {})
        if meter is not None:
            meter.cache_hit({"prompt_tokens": usage.get("prompt_tokens"),
                             "completion_tokens": usage.get("completion_tokens")})
        headers = {"X-Request-Id": request_id, CACHE_HEADER: lookup.header}
        if facts.stream:
            events = replay_sse(reply, response_id, created, wants_usage(facts.body))
            return StreamingResponse(_iterate(events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", **headers})
        return JSONResponse(replay_json(reply, response_id, created), headers=headers)

    def store_answer(self, lookup: Lookup, response: Response) -> None:
        """After a miss: file the answer (a stream's once it has ended) under the lookup's keys."""
        if response.status_code != 200:
            return
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._tap(lookup, response, response.body_iterator)
            return
        try:
            body = json.loads(bytes(response.body))
        except ValueError:
            return
        self.spawn(self._store(lookup, body))

    async def _tap(self, lookup: Lookup, response: StreamingResponse, events: AsyncIterator) -> AsyncIterator:
        """The stream as it is, its chunks kept; at [DONE], with the usage the replica reported, stored."""
        chunks: list[dict] = []
        readable = True
        async for event in events:
            yield event
            text = event.decode() if isinstance(event, (bytes, bytearray)) else event
            for line in text.split("\n"):
                if line == "data: [DONE]" and readable:
                    usage = getattr(getattr(response, "relay", None), "chunks", None)
                    if usage is not None and usage.usage is not None:
                        chunks.append({"choices": [], "usage": usage.usage})
                    try:
                        self.spawn(self._store(lookup, collect_stream(chunks, self.clock())))
                    except IncompleteStream:
                        pass
                elif line.startswith("data: ") and readable:
                    try:
                        chunks.append(json.loads(line[6:]))
                    except ValueError:
                        readable = False   # not stored; the client still gets every event

    async def _store(self, lookup: Lookup, reply) -> None:
        try:
            if await self.cache.store(lookup, reply):
                self.count(lookup.request.model, "stored")
        except Exception as exc:   # noqa: BLE001 - a cache that cannot store costs only later hits
            log.warning("response cache: storing an answer failed: %s", exc)


async def _iterate(events: list[str]) -> AsyncIterator[str]:
    for event in events:
        yield event
