"""Proxy: sends each request to a replica the router picks, retries elsewhere, and migrates broken streams.

Bodies: each request carries two bodies, one for native workers (with the gateway's `priority`,
`cache_salt` and usage options) and one for external replicas (the client's, plus include_usage when
metered); `Upstream` holds both.

Metering: when a `RequestMeter` is given, each attempt that got a response ends in one usage event
(see gateway/accounting.py); streams ask for usage on every chunk and pass it on only as the client
asked, rewritten to what the client is billed.

Retry: a replica that cannot be reached, or answers 502/503/504, is left for another one (up to
`max_attempts` replicas, with a doubling backoff); a replica that cannot be reached leaves routing at
once. When no replica can take it, the client gets 503 `no_replica_available` naming the model.

Regions: a request with a region (or bound to regions) is offered only the replicas that
router/regions.py allows: its own region first, the nearest with room after; a request bound to
regions none of whose replicas is up gets 503 `region_unavailable` at once, never another region.

Migration: for native replicas the gateway asks for `return_token_ids`, so every SSE chunk carries
the ids of the tokens it delivers. If the upstream stream breaks before `[DONE]`, the same request goes
to another replica with `resume_token_ids` = every token already delivered; that worker treats them
as its first outputs (same seeded generator, same detokenizer state) and streams only what follows.
The client's stream goes on with the same id, no repeated and no missing tokens. The ids are taken
out of the chunks again unless the client asked for them. Streams of several choices (n > 1, or a batch
of prompts) and streams from external replicas are retried only before their first byte; a later break
ends them with an error event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from fastapi.responses import Response, StreamingResponse

from infercloud.config import GatewaySpec
from infercloud.controller.replicas import Replica, ReplicaSet
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.gateway.planner import Plan, RoutePlanner, num_prompts
from infercloud.openai.errors import APIError
from infercloud.openai.sse import sse_done, sse_event
from infercloud.router.prefix_aware import match_length
from infercloud.router.regions import RegionMap, regional_candidates

log = logging.getLogger("infercloud.gateway")

RETRYABLE_STATUS = frozenset({502, 503, 504})


@dataclass
class Upstream:
    """What to send: the body for native workers and the one for external replicas, and the client's wishes."""

    native: dict
    external: dict
    client_usage: bool = False          # the client asked for stream_options.include_usage
    client_continuous: bool = False     # ... or for usage on every chunk

    def encode(self, replica: Replica, extra: dict | None = None) -> bytes:
        body = self.external if replica.is_external else self.native
        return json.dumps({**body, **extra} if extra else body).encode()


class StreamBroken(Exception):
    """The upstream stream ended without `data: [DONE]`."""


def no_replica(model: str, attempts: int, last_error: str | None) -> APIError:
    detail = f" Last error: {last_error}." if last_error else ""
    return APIError(503, f"No replica of model `{model}` could take the request after {attempts} attempts.{detail}",
                    type="overloaded_error", code="no_replica_available", headers={"Retry-After": "1"})


class Proxy:
    def __init__(self, replicas: ReplicaSet, planner: RoutePlanner, client: aiohttp.ClientSession, spec: GatewaySpec,
                 metrics: GatewayMetrics, regions: RegionMap | None = None,
                 internal_headers: dict[str, str] | None = None):
        self.replicas = replicas
        self.internal_headers = internal_headers or {}   # native workers answer only the internal token
        self.regions = regions or RegionMap()
        self.planner = planner
        self.client = client
        self.spec = spec
        self.metrics = metrics
        self._leases: dict[tuple[int, str], int] = {}  # (request's plan, replica) -> tokens counted there

    # -- choosing and sending ----------------------------------------------------------------------
    def _pick(self, plan: Plan, tried: set[str]) -> Replica | None:
        candidates = {r.replica_id: r for r in self.replicas.routable(plan.route.model)
                      if r.replica_id not in tried and not (plan.native_only and r.is_external)}
        if not candidates:
            return None
        policy = self.planner.routes[plan.route.model].policy
        views = [r.view() for r in candidates.values()]
        if plan.route.region is not None or plan.route.allowed_regions is not None:
            views = regional_candidates(views, plan.route.region, plan.route.allowed_regions, self.regions,
                                        self.spec.spillover_outstanding)
        chosen = policy.choose(plan.route, views)
        return candidates[chosen.replica_id] if chosen is not None else None

    def _check_residency(self, plan: Plan) -> None:
        """A request bound to regions where no replica is up, while others are up elsewhere: a clear 503."""
        allowed = plan.route.allowed_regions
        if allowed is None:
            return
        elsewhere = sorted({str(r.region) for r in self.replicas.routable(plan.route.model) if r.region not in allowed})
        if elsewhere and not any(r.region in allowed for r in self.replicas.routable(plan.route.model)):
            raise APIError(503, f"No replica of model `{plan.route.model}` is up in the regions this request may be "
                           f"served in ({', '.join(sorted(allowed))}); replicas in {', '.join(elsewhere)} may not "
                           "serve it (data residency).", type="overloaded_error", code="region_unavailable",
                           headers={"Retry-After": "5"})

    def _scales_from_zero(self, model: str) -> bool:
        spec = self.planner.routes[model].spec.autoscaling
        return spec is not None and not self.replicas.routable(model)

    async def _hold(self, plan: Plan, tried: set[str]) -> Replica:
        """Wait for a replica of a model that has none ready (the autoscaler starts one when it sees
        requests held); bounded in number and time, each ending in a clear 503."""
        model = plan.route.model
        traffic = self.replicas.traffic(model)
        if traffic.held >= self.spec.max_held:
            raise APIError(503, f"Model `{model}` is starting and already holds {traffic.held} requests; retry "
                           "shortly.", type="overloaded_error", code="model_starting", headers={"Retry-After": "5"})
        traffic.held += 1
        self.replicas.want(model)
        deadline = asyncio.get_running_loop().time() + self.spec.hold_timeout_s
        try:
            while asyncio.get_running_loop().time() < deadline:
                replica = self._pick(plan, tried)
                if replica is not None:
                    return replica
                self._check_residency(plan)       # came up, but only where this request may not go
                await asyncio.sleep(0.02)
        finally:
            traffic.held -= 1
        raise APIError(503, f"Model `{model}` has no ready replica: none started within "
                       f"{self.spec.hold_timeout_s:g} s.", type="overloaded_error", code="model_not_ready",
                       headers={"Retry-After": "5"})

    def _begin(self, replica: Replica, plan: Plan) -> None:
        """Count the request against the replica: its tokens less the prompt blocks the replica holds.

        A prompt whose 1024-token prefix is cached there costs the replica its question and output,
        not its whole length, so a replica serving cache hits does not look loaded to the policies.
        """
        block_size = self.planner.routes[plan.route.model].block_size
        cached = match_length(plan.route.prompt_block_hashes, replica.known_hashes) * block_size
        tokens = plan.outstanding_tokens - cached
        self._leases[(id(plan), replica.replica_id)] = tokens
        replica.outstanding_requests += 1
        replica.outstanding_tokens += tokens
        replica.num_routed += 1
        replica.known_hashes.add(plan.route.prompt_block_hashes)
        self.metrics.routed(replica)

    def _headers(self, replica: Replica, headers: dict[str, str]) -> dict[str, str]:
        """A native worker gets the internal token; an external replica never sees it."""
        return headers if replica.is_external else {**headers, **self.internal_headers}

    def _end(self, replica: Replica, plan: Plan) -> None:
        replica.outstanding_requests -= 1
        replica.outstanding_tokens -= self._leases.pop((id(plan), replica.replica_id))

    async def _send(self, plan: Plan, path: str, content: Callable[[Replica], bytes], headers: dict[str, str],
                    tried: set[str], meter=None) -> tuple[Replica, aiohttp.ClientResponse]:
        """Open a response on some replica (streamed; the caller reads and closes it and calls _end)."""
        backoff, last_error = self.spec.retry_backoff_s, None
        attempt, stale = -1, 0
        while attempt + 1 < self.spec.max_attempts:
            attempt += 1
            if attempt:
                self.metrics.retry(plan.route.model)
                await asyncio.sleep(backoff)
                backoff *= 2
            replica = self._pick(plan, tried)
            if replica is None:
                self._check_residency(plan)
            if replica is None and self._scales_from_zero(plan.route.model):
                replica = await self._hold(plan, tried)
            if replica is None:
                last_error = last_error or "no replica is ready"
                continue
            tried.add(replica.replica_id)
            self._begin(replica, plan)
            try:
                response = await self.client.post(replica.url + path, data=content(replica),
                                                  headers=self._headers(replica, headers))
            except asyncio.CancelledError:  # the client left while the replica worked on it
                self._end(replica, plan)
                if meter is not None:
                    meter.lookup_later(self.client, replica, "aborted", None, self.internal_headers)
                raise
            except aiohttp.ClientError as exc:
                self._end(replica, plan)
                self.replicas.mark_failed(replica)
                last_error = f"{replica.replica_id} unreachable ({type(exc).__name__})"
                continue
            if response.status in RETRYABLE_STATUS:
                body = await _read_and_close(response)
                self._end(replica, plan)
                last_error = f"{replica.replica_id} answered {response.status}: {_message(body)}"
                if _code(body) == "model_not_loaded" and stale < MAX_STALE:   # a pool worker unloaded it:
                    stale += 1                         # out of routing now, and not a failed attempt: the
                    attempt -= 1                       # request is held until the model is loaded again
                    self.replicas.mark_failed(replica)
                    self.replicas.want(plan.route.model)
                continue
            return replica, response
        raise no_replica(plan.route.model, self.spec.max_attempts, last_error)

    # -- plain requests ----------------------------------------------------------------------------
    async def unary(self, plan: Plan, path: str, upstream: Upstream, headers: dict[str, str],
                    meter=None) -> Response:
        tried: set[str] = set()
        while True:
            replica, response = await self._send(plan, path, upstream.encode, headers, tried, meter)
            try:
                content = await response.read()
            except aiohttp.ClientError:  # died while answering: nothing reached the client, so retry
                self.replicas.mark_failed(replica)
                if len(tried) >= self.spec.max_attempts:
                    raise no_replica(plan.route.model, len(tried), f"{replica.replica_id} failed mid-response")
                continue
            except asyncio.CancelledError:
                if meter is not None:
                    meter.lookup_later(self.client, replica, "aborted", None, self.internal_headers)
                raise
            finally:
                response.close()
                self._end(replica, plan)
            if meter is not None:
                outcome = "completed" if response.status < 400 else "failed"
                meter.attempt_ended(replica.replica_id, _usage(content) if outcome == "completed" else None,
                                    outcome, response.status)
            return Response(content, status_code=response.status,
                            media_type=response.headers.get("content-type", "application/json"),
                            headers=_served_by(replica, headers))

    # -- streams -----------------------------------------------------------------------------------
    async def stream(self, plan: Plan, path: str, upstream: Upstream, headers: dict[str, str],
                     meter=None) -> Response:
        relay = _Relay(self, plan, path, upstream, headers, meter)
        replica, response = await self._send(plan, path, relay.content, headers, relay.tried, meter)
        if response.status != 200:  # a client error (400, 404, ...): pass it on as it is
            content = await _read_and_close(response)
            self._end(replica, plan)
            if meter is not None:
                meter.attempt_ended(replica.replica_id, None, "failed", response.status)
            return Response(content, status_code=response.status,
                            media_type=response.headers.get("content-type", "application/json"),
                            headers=_served_by(replica, headers))
        relay.replica, relay.response = replica, response
        return _RelayResponse(relay, relay.events(replica, response), media_type="text/event-stream",
                              headers={"Cache-Control": "no-cache", **_served_by(replica, headers)})


class _RelayResponse(StreamingResponse):
    """A relay's response: however the response ends (even before its body starts), the relay is closed."""

    def __init__(self, relay: "_Relay", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.relay = relay

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.relay.close()


class _Relay:
    """One client stream: relays upstream chunks and, if the upstream breaks, resumes on another replica."""

    def __init__(self, proxy: Proxy, plan: Plan, path: str, upstream: Upstream, headers: dict[str, str],
                 meter=None):
        self.proxy = proxy
        self.plan = plan
        self.path = path
        self.upstream = upstream
        self.headers = headers
        self.meter = meter
        self.tried: set[str] = set()
        body = upstream.external
        self.wants_ids = bool(body.get("return_token_ids"))
        self.num_choices = (body.get("n") if isinstance(body.get("n"), int) else 1) * num_prompts(body)
        self.can_migrate = self.num_choices == 1
        self.delivered: list[int] = list(body.get("resume_token_ids") or [])
        self.started = asyncio.get_running_loop().time() if proxy is not None else 0.0
        self.first_token_at: float | None = None
        self.replica: Replica | None = None              # the attempt in progress, if any
        self.response: aiohttp.ClientResponse | None = None
        self.usage: dict | None = None     # the current attempt's usage so far
        # tokens the current attempt was handed as already generated, and not billed by it: none at first, so
        # a client's own resume_token_ids are billed (as the completion tokens the worker counts them as),
        # or they would be a free prompt
        self.num_resumed = 0
        self.stream_id: str | None = None
        self.sent_prompt_ids = self.finished = False
        self.roles_sent: set[int] = set()        # choice indexes whose role chunk the client has
        self.choices_finished: set[int] = set()  # choice indexes that had their finish_reason

    def content(self, replica: Replica) -> bytes:
        if replica.is_external:
            return self.upstream.encode(replica)
        extra = {"return_token_ids": True}
        if self.delivered:
            extra["resume_token_ids"] = self.delivered
        return self.upstream.encode(replica, extra)

    async def events(self, replica: Replica, response: aiohttp.ClientResponse) -> AsyncIterator[str]:
        self.replica, self.response = replica, response
        try:
            while True:
                try:
                    async for line in response.content:
                        event = self._rewrite(line.decode())
                        if event is not None:
                            yield event
                        if self.finished:
                            await _drain(response)  # the body's end, so the worker sees a clean finish
                            self._close_attempt("completed")
                            return
                    raise StreamBroken("the stream ended before [DONE]")
                except (aiohttp.ClientError, StreamBroken) as exc:
                    self.proxy.replicas.mark_failed(replica)
                    if self.saw_finish:  # everything but [DONE] had arrived
                        self._close_attempt("completed")
                        yield sse_done()
                        return
                    if not self.can_migrate or replica.is_external:
                        self._close_attempt("failed")
                        yield sse_event(_error_body(f"The replica serving this stream failed ({exc!r})."))
                        return
                    try:
                        new_replica, response = await self.proxy._send(self.plan, self.path, self.content,
                                                                       self.headers, self.tried)
                    except APIError as err:
                        self._close_attempt("failed")
                        yield sse_event(err.body())
                        return
                    self._close_attempt("migrated")
                    replica = self.replica = new_replica
                    self.response = response
                    self.proxy.metrics.migration(self.plan.route.model)
                    log.warning("stream %s: replica failed after %d tokens (%r); resumed on %s",
                                self.headers.get("X-Request-Id"), len(self.delivered), exc, replica.replica_id)
                    if response.status != 200:
                        message = _message(await response.read())
                        self._close_attempt("failed")
                        yield sse_event(_error_body(f"Resuming the stream failed: {message}"))
                        return
        finally:
            self.close()

    def _close_attempt(self, outcome: str) -> None:
        """The current attempt is over: its connection closes, its load leaves the replica, it is metered."""
        replica, self.replica = self.replica, None
        if replica is None:
            return
        self.response.close()  # unfinished (the client left): closing the connection aborts it upstream
        self.proxy._end(replica, self.plan)
        if self.meter is not None:
            self.meter.attempt_ended(replica.replica_id, self.usage, outcome, 200, self.num_resumed)
        self.usage, self.num_resumed = None, len(self.delivered)

    def close(self) -> None:
        """The client's stream is over, however it ended (also when it never started); idempotent."""
        self._close_attempt("aborted")
        if self.meter is not None:
            self.meter.close()
            self.meter = None
        if self.finished and self.first_token_at is not None:  # for the autoscaler's SLO view
            now = asyncio.get_running_loop().time()
            tokens = len(self.delivered)
            tpot = (now - self.first_token_at) / (tokens - 1) if tokens > 1 else None
            self.proxy.replicas.traffic(self.plan.route.model).stream_done(self.first_token_at - self.started, tpot)
            self.first_token_at = None

    @property
    def saw_finish(self) -> bool:
        """Every choice has had its finish_reason: all but [DONE] (and usage) was delivered."""
        return len(self.choices_finished) >= self.num_choices

    def _rewrite(self, line: str) -> str | None:
        """One upstream SSE line -> the event for the client (None: nothing to send)."""
        line = line.rstrip("\r\n")
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.finished = True
            return sse_done()
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            return f"{line}\n\n"
        if not isinstance(chunk, dict) or "choices" not in chunk:
            return f"{line}\n\n"
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
            if not chunk["choices"]:  # the final usage chunk
                if not (self.upstream.client_usage or self.upstream.client_continuous):
                    return None
            elif not self.upstream.client_continuous:
                del chunk["usage"]
            if "usage" in chunk and self.meter is not None:
                chunk["usage"] = self.meter.client_usage(chunk["usage"])
        if self.stream_id is None:
            self.stream_id = chunk.get("id")
        elif "id" in chunk:
            chunk["id"] = self.stream_id
        if "prompt_token_ids" in chunk and (self.sent_prompt_ids or not self.wants_ids):
            del chunk["prompt_token_ids"]
        self.sent_prompt_ids |= self.wants_ids
        keep = []
        for choice in chunk["choices"]:
            ids = choice.get("token_ids") if self.wants_ids else choice.pop("token_ids", None)
            if ids:
                self.delivered.extend(ids)
            if choice.get("finish_reason"):
                self.choices_finished.add(choice.get("index", 0))
            delta = choice.get("delta")
            if isinstance(delta, dict) and "role" in delta:
                if choice.get("index", 0) in self.roles_sent:
                    del delta["role"]
                self.roles_sent.add(choice.get("index", 0))
            if (self.wants_ids and ids) or _has_content(choice) or (isinstance(delta, dict) and "role" in delta):
                keep.append(choice)
                if _has_content(choice) and self.first_token_at is None:
                    self.first_token_at = asyncio.get_running_loop().time() if self.proxy is not None else 0.0
                    if self.meter is not None:
                        self.meter.first_token()
        if chunk["choices"] and not keep:
            return None
        chunk["choices"] = keep if chunk["choices"] else []
        return sse_event(chunk)


async def _drain(response: aiohttp.ClientResponse) -> None:
    try:
        await response.content.read()
    except aiohttp.ClientError:
        pass


async def _read_and_close(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except aiohttp.ClientError:
        return b""
    finally:
        response.close()


def _has_content(choice: dict) -> bool:
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    calls = delta.get("tool_calls") if isinstance(delta, dict) else None
    return bool(text) or bool(calls) or bool(choice.get("finish_reason")) or bool(choice.get("logprobs"))


def _usage(content: bytes) -> dict | None:
    try:
        usage = json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def _served_by(replica: Replica, headers: dict[str, str]) -> dict[str, str]:
    """The response's headers: its request id, and the replica (and its region) that took it first."""
    served = {"X-Request-Id": headers["X-Request-Id"], "X-Infercloud-Replica": replica.replica_id}
    if replica.region is not None:
        served["X-Infercloud-Region"] = replica.region
    return served


def _error_body(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "replica_failed"}}


MAX_STALE = 8   # routes to a pool worker that had just unloaded the model, per request, not counted as attempts


def _code(body: bytes) -> str | None:
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _message(body: bytes) -> str:
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")
