"""HTTP load generator for any OpenAI-compatible server: streams /v1/completions and times every chunk.

The client sends one request and records its raw timeline (`StreamRecord`, metrics.py): send time,
the time of every SSE chunk that carries non-empty text, the last byte, completion tokens from the
usage chunk. `run_load` sends a whole workload with an arrival process (arrivals.py) and returns the
records with the wall time; metrics.py derives everything else from those. Prompts go as token ids
with greedy sampling; `ignore_eos` (a vLLM extension, so every request produces exactly max_tokens)
is sent unless the target says the server would reject it. Times come from an injected clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx

from infercloud.bench.arrivals import ArrivalProcess, ClosedLoop
from infercloud.bench.metrics import LoadResult, StreamRecord
from infercloud.bench.workloads import BenchRequest
from infercloud.internal_token import bearer, client_token

__all__ = ["ArrivalProcess", "ClosedLoop", "LoadResult", "StreamRecord", "Target", "StreamError",
           "completion_body", "stream_completion", "make_client", "run_load", "run_load_sync", "internal_state"]

DEFAULT_NUM_WARMUP = 2

Clock = Callable[[], float]


def internal_state(base_url: str) -> dict:
    """A server's GET /internal/state, shown the internal token this machine's servers use."""
    return httpx.get(f"{base_url}/internal/state", headers=bearer(client_token()), timeout=10,
                     trust_env=False).json()


# -- the client: one streamed request -----------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    base_url: str                              # e.g. http://127.0.0.1:8000 (no /v1)
    model: str
    read_timeout_s: float | None = 600.0       # per read; only a stuck server reaches it
    vllm_extras: bool = True                   # send ignore_eos (vLLM's and infercloud's extension)
    extra_body: tuple[tuple[str, object], ...] = ()   # fields added to every request (e.g. response_format)


class StreamError(Exception):
    """The response was 200 but its stream was not a complete, well-formed completion."""


def completion_body(target: Target, req: BenchRequest) -> dict:
    body = {"model": req.model or target.model, "prompt": list(req.prompt_token_ids), "max_tokens": req.max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if target.vllm_extras:
        body["ignore_eos"] = True
    if req.tenant is not None:
        body["user"] = req.tenant
    body.update(target.extra_body)
    return body


async def stream_completion(client: httpx.AsyncClient, target: Target, req: BenchRequest,
                            clock: Clock = time.perf_counter, body: dict | None = None) -> StreamRecord:
    """Send one streamed completion (`body`, default completion_body) and record its timeline; never raises
    for a failed request."""
    record = StreamRecord(req.request_id, len(req.prompt_token_ids), send_s=clock())
    try:
        async with client.stream("POST", "/v1/completions", json=body or completion_body(target, req)) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:300]
                record.error = f"HTTP {response.status_code}: {detail}"
            else:
                await _read_sse(response, record, clock)
    except StreamError as exc:
        record.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - transport errors, bad JSON: a failure, counted apart
        record.error = f"{type(exc).__name__}: {exc}"
    record.last_byte_s = clock()
    return record


async def _read_sse(response: httpx.Response, record: StreamRecord, clock: Clock) -> None:
    saw_done = False
    async for line in response.aiter_lines():
        now = clock()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            saw_done = True
            continue
        payload = json.loads(data)
        if "error" in payload:
            raise StreamError(f"error event: {json.dumps(payload['error'])[:300]}")
        if payload.get("usage"):
            record.completion_tokens = payload["usage"]["completion_tokens"]
        if any(choice.get("text") for choice in payload.get("choices") or ()):
            record.content_times_s.append(now)
    if not saw_done:
        raise StreamError("no [DONE]: the stream ended early")
    if record.completion_tokens is None:
        raise StreamError("no usage chunk: the stream carried no completion token count")
    if not record.content_times_s:
        raise StreamError("no content: no chunk carried text")


# -- a run ----------------------------------------------------------------------------------------------
def make_client(target: Target, max_in_flight: int | None) -> httpx.AsyncClient:
    """One client for the whole run: a pool as large as the arrivals need, no timeout but a stuck read's."""
    limits = httpx.Limits(max_connections=None if max_in_flight is None else max_in_flight + 4,
                          max_keepalive_connections=None if max_in_flight is None else max_in_flight + 4)
    timeout = httpx.Timeout(connect=60.0, read=target.read_timeout_s, write=60.0, pool=None)
    return httpx.AsyncClient(base_url=target.base_url, limits=limits, timeout=timeout, trust_env=False)


async def run_load(target: Target, requests: Iterable[BenchRequest], arrivals: ArrivalProcess,
                   warmup: Sequence[BenchRequest] = (), clock: Clock = time.perf_counter,
                   on_done: Callable[[StreamRecord], None] | None = None) -> LoadResult:
    """Send `warmup` (all at once, not counted), then `requests` as `arrivals` decides; time the latter.

    `requests` may be a lazy iterable (a run limited by duration); `on_done` sees each timed record
    as it ends (a progress bar).
    """
    async with make_client(target, arrivals.max_in_flight) as client:
        warm_records: list[StreamRecord] = []

        async def send_warmup(req: BenchRequest) -> None:
            warm_records.append(await stream_completion(client, target, req, clock))

        if warmup:
            await ClosedLoop(len(warmup)).drive(warmup, send_warmup)
        records: list[StreamRecord] = []

        async def send(req: BenchRequest) -> None:
            record = await stream_completion(client, target, req, clock)
            records.append(record)
            if on_done is not None:
                on_done(record)

        cpu_start, start = time.process_time(), clock()
        await arrivals.drive(requests, send)
        wall_s, cpu_s = clock() - start, time.process_time() - cpu_start
    return LoadResult(wall_s, records, client_cpu_s=cpu_s, warmup_failures=sum(not r.ok for r in warm_records),
                      start_s=start)


def run_load_sync(target: Target, requests: Iterable[BenchRequest], arrivals: ArrivalProcess,
                  warmup: Sequence[BenchRequest] = (),
                  on_done: Callable[[StreamRecord], None] | None = None) -> LoadResult:
    """`run_load` on a fresh event loop, for synchronous callers (bench scripts, tests)."""
    return asyncio.run(run_load(target, requests, arrivals, warmup, on_done=on_done))
