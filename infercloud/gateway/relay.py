"""Relay: one client stream, relayed from a replica and, if that replica breaks, resumed on another.

Migration: for native replicas the gateway asks for `return_token_ids`, so every SSE chunk carries the ids
of the tokens it delivers (chunks.ChunkRewriter collects them). If the upstream stream breaks before
`[DONE]`, the same request goes to another replica (through the proxy, which picks, sends and retries)
with `resume_token_ids` = every token already delivered; that worker treats them as its first outputs
(same seeded generator, same detokenizer state) and streams only what follows. The client's stream goes
on with the same id, no repeated and no missing tokens. Streams of several choices (n > 1, or a batch of
prompts) and streams from external replicas are retried only before their first byte; a later break ends
them with an error event.

Metering: each attempt ends in one usage event (completed, migrated, failed or aborted) with the usage
its replica reported; the tokens a resumed attempt was handed are not billed again. The stream's TTFT
and TPOT go to the autoscaler's traffic feed when it finishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from fastapi.responses import StreamingResponse

from infercloud.gateway.chunks import ChunkRewriter
from infercloud.gateway.planner import Plan
from infercloud.observability.tracing import current as current_trace
from infercloud.openai.errors import APIError
from infercloud.openai.sse import sse_done, sse_event

log = logging.getLogger("infercloud.gateway")


class StreamBroken(Exception):
    """The upstream stream ended without `data: [DONE]`."""


class Relay:
    def __init__(self, proxy, plan: Plan, path: str, upstream, headers: dict[str, str], meter=None,
                 clock: Callable[[], float] | None = None):
        self.proxy = proxy                # gateway/proxy.py: open, end, failed, metrics, traffic
        self.plan = plan
        self.path = path
        self.upstream = upstream
        self.headers = headers
        self.meter = meter
        self.clock = clock or asyncio.get_running_loop().time
        self.tried: set[str] = set()
        body = upstream.external
        self.chunks = ChunkRewriter(plan.num_choices, bool(body.get("return_token_ids")), upstream.client_usage,
                                    upstream.client_continuous, body.get("resume_token_ids"),
                                    meter.client_usage if meter is not None else None)
        self.started = self.clock()
        self.first_token_at: float | None = None
        self.attempt = None               # the proxy's Attempt in progress, if any
        self.trace_parent = current_trace() if getattr(proxy, "tracing", None) else None   # a migration's attempt
        # tokens the current attempt was handed as already generated, and not billed by it: none at first, so
        # a client's own resume_token_ids are billed (as the completion tokens the worker counts them as),
        # or they would be a free prompt
        self.num_resumed = 0

    def content(self, replica) -> bytes:
        """The body for one attempt: a native replica is asked for token ids and resumes what was delivered."""
        if replica.is_external:
            return self.upstream.encode(replica)
        extra = {"return_token_ids": True}
        if self.chunks.delivered:
            extra["resume_token_ids"] = self.chunks.delivered
        return self.upstream.encode(replica, extra)

    async def events(self) -> AsyncIterator[str]:
        try:
            while self.attempt is not None:
                try:
                    async for line in self.attempt.response.content:
                        event = self._event(line.decode())
                        if event is not None:
                            yield event
                        if self.chunks.finished:
                            await _drain(self.attempt.response)  # the body's end: the worker sees a clean finish
                            self._close_attempt("completed")
                            return
                    raise StreamBroken("the stream ended before [DONE]")
                except (aiohttp.ClientError, StreamBroken) as exc:
                    error = await self._recover(exc)
                    if error is not None:
                        yield error
        finally:
            self.close()

    def _event(self, line: str) -> str | None:
        event = self.chunks.rewrite(line)
        if self.chunks.has_content and self.first_token_at is None:
            self.first_token_at = self.clock()
            if self.meter is not None:
                self.meter.first_token()
        return event

    async def _recover(self, exc: Exception) -> str | None:
        """The upstream broke: finish the stream, resume it elsewhere, or end it with an error event (the
        event to send, if any; `attempt` is None when the stream is over)."""
        replica = self.attempt.replica
        self.proxy.failed(replica)
        if self.chunks.saw_finish:  # everything but [DONE] had arrived
            self._close_attempt("completed")
            return sse_done()
        if self.plan.num_choices != 1 or replica.is_external:
            self._close_attempt("failed")
            return sse_event(_error_body(f"The replica serving this stream failed ({exc!r})."))
        try:
            attempt = await self.proxy.open(self.plan, self.path, self.content, self.headers, self.tried,
                                            trace_parent=self.trace_parent, resumed=len(self.chunks.delivered))
        except APIError as err:
            self._close_attempt("failed")
            return sse_event(err.body())
        self._close_attempt("migrated")
        self.attempt = attempt
        self.proxy.metrics.migration(self.plan.route.model)
        log.warning("stream %s: replica failed after %d tokens (%r); resumed on %s", self.headers.get("X-Request-Id"),
                    len(self.chunks.delivered), exc, attempt.replica.replica_id)
        if attempt.response.status != 200:
            message = upstream_message(await attempt.response.read())
            self._close_attempt("failed")
            return sse_event(_error_body(f"Resuming the stream failed: {message}"))
        return None

    def _close_attempt(self, outcome: str) -> None:
        """The current attempt is over: its connection closes, its load leaves the replica, it is metered."""
        attempt, self.attempt = self.attempt, None
        if attempt is None:
            return
        self.proxy.end(attempt, outcome)  # unfinished (the client left): closing the connection aborts it upstream
        if self.meter is not None:
            self.meter.attempt_ended(attempt.replica.replica_id, self.chunks.usage, outcome, 200, self.num_resumed)
        self.chunks.usage, self.num_resumed = None, len(self.chunks.delivered)

    def close(self) -> None:
        """The client's stream is over, however it ended (also when it never started); idempotent."""
        self._close_attempt("aborted")
        if self.meter is not None:
            self.meter.close()
            self.meter = None
        if self.chunks.finished and self.first_token_at is not None:  # for the autoscaler's SLO view
            tokens = len(self.chunks.delivered)
            tpot = (self.clock() - self.first_token_at) / (tokens - 1) if tokens > 1 else None
            self.proxy.traffic.stream_done(self.plan.route.model, self.first_token_at - self.started, tpot)
            self.first_token_at = None


class RelayResponse(StreamingResponse):
    """A relay's response: however the response ends (even before its body starts), the relay is closed."""

    def __init__(self, relay: Relay, **kwargs):
        super().__init__(relay.events(), **kwargs)
        self.relay = relay

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.relay.close()


async def _drain(response: aiohttp.ClientResponse) -> None:
    try:
        await response.content.read()
    except aiohttp.ClientError:
        pass


def _error_body(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "replica_failed"}}


def upstream_message(body: bytes) -> str:
    """The message of a replica's error body (its first bytes when it is not OpenAI's error shape)."""
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")
