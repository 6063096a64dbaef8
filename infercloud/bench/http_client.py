"""HTTP load generator for any OpenAI-compatible server: streams /v1/completions and times every chunk.

Three parts, each small enough to become its own module when `infercloud bench serve` grows:
  - arrivals decide *when* each request is sent. `ClosedLoop(c)` runs c senders that each send their
    next request as soon as the previous one ends, so exactly c are in flight (fewer only at the end).
    An open-loop process (Gamma gaps, BENCHMARKS.md) is another class with the same `drive` method.
  - the client sends one request and records its raw timeline (`StreamRecord`): send time, the time of
    every SSE chunk that carries non-empty text, the last byte, completion tokens from the usage chunk.
  - the metrics are pure properties and functions of those records and the wall time, with the
    definitions of BENCHMARKS.md (those of `vllm bench serve`): TTFT = first non-empty chunk - send,
    E2EL = last byte - send, TPOT = (E2EL - TTFT) / (out - 1) for out > 1, ITL = every gap between
    content chunks, pooled over requests. Failed requests count apart and never in latency statistics.
Workloads are any sequence of `BenchRequest` (workloads.py). Times come from an injected clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from infercloud.bench.closed_loop import summarize
from infercloud.bench.workloads import BenchRequest

DEFAULT_NUM_WARMUP = 2

Clock = Callable[[], float]


# -- metrics: raw timeline of one request, and what a run derives from many -----------------------------
@dataclass
class StreamRecord:
    request_id: str
    num_prompt_tokens: int
    send_s: float
    content_times_s: list[float] = field(default_factory=list)  # arrival of each chunk with non-empty text
    last_byte_s: float | None = None
    completion_tokens: int | None = None                         # from the final usage chunk
    error: str | None = None                                     # "KIND: detail"; None when it succeeded

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        return self.content_times_s[0] - self.send_s if self.ok and self.content_times_s else None

    @property
    def e2el_s(self) -> float | None:
        return self.last_byte_s - self.send_s if self.ok and self.last_byte_s is not None else None

    @property
    def tpot_s(self) -> float | None:
        """(E2EL - TTFT) / (output tokens - 1); None for a one-token output or a failed request."""
        ttft, e2el, out = self.ttft_s, self.e2el_s, self.completion_tokens
        if ttft is None or e2el is None or out is None or out < 2:
            return None
        return (e2el - ttft) / (out - 1)

    @property
    def itls_s(self) -> list[float]:
        if not self.ok:
            return []
        times = self.content_times_s
        return [later - earlier for earlier, later in zip(times, times[1:])]

    def to_json(self) -> dict:
        return {"request_id": self.request_id, "num_prompt_tokens": self.num_prompt_tokens,
                "completion_tokens": self.completion_tokens, "error": self.error, "ttft_s": self.ttft_s,
                "tpot_s": self.tpot_s, "e2el_s": self.e2el_s,
                "chunk_offsets_s": [t - self.send_s for t in self.content_times_s]}


@dataclass
class LoadResult:
    wall_s: float                  # first send -> last request done
    records: list[StreamRecord]
    client_cpu_s: float | None = None
    warmup_failures: int = 0

    @property
    def completed(self) -> list[StreamRecord]:
        return [r for r in self.records if r.ok]

    @property
    def failures(self) -> dict[str, int]:
        """Failed requests by kind ("HTTP 503", "ReadTimeout", "no usage chunk", ...)."""
        return dict(Counter(r.error.split(":")[0] for r in self.records if not r.ok))

    @property
    def output_tokens(self) -> int:
        return sum(r.completion_tokens or 0 for r in self.completed)

    @property
    def request_throughput(self) -> float:
        return len(self.completed) / self.wall_s

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / self.wall_s

    def to_json(self) -> dict:
        done = self.completed
        return {
            "wall_s": self.wall_s, "num_requests": len(self.records), "completed": len(done),
            "failed": len(self.records) - len(done), "failures": self.failures,
            "warmup_failures": self.warmup_failures, "client_cpu_s": self.client_cpu_s,
            "output_tokens": self.output_tokens, "request_throughput_req_s": self.request_throughput,
            "output_throughput_tok_s": self.output_throughput,
            "ttft_s": summarize([r.ttft_s for r in done if r.ttft_s is not None]),
            "tpot_s": summarize([r.tpot_s for r in done if r.tpot_s is not None]),
            "itl_s": summarize([gap for r in done for gap in r.itls_s]),
            "e2el_s": summarize([r.e2el_s for r in done if r.e2el_s is not None]),
            "requests": [r.to_json() for r in self.records],
        }


# -- arrivals: when requests are sent ------------------------------------------------------------------
class ArrivalProcess(Protocol):
    @property
    def max_in_flight(self) -> int | None:
        """The most requests it ever has in flight (None: unbounded); sizes the connection pool."""

    async def drive(self, requests: Sequence[BenchRequest],
                    send: Callable[[BenchRequest], Awaitable[None]]) -> None:
        """Call `send` for every request, in order, at the times the process chooses; return when all ended."""


@dataclass(frozen=True)
class ClosedLoop:
    concurrency: int

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")

    @property
    def max_in_flight(self) -> int:
        return self.concurrency

    async def drive(self, requests: Sequence[BenchRequest],
                    send: Callable[[BenchRequest], Awaitable[None]]) -> None:
        pending = iter(requests)  # shared by the senders; next() never yields, so each request goes once

        async def sender() -> None:
            for req in pending:
                await send(req)

        await asyncio.gather(*(sender() for _ in range(min(self.concurrency, len(requests)))))


# -- the client: one streamed request -----------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    base_url: str                              # e.g. http://127.0.0.1:8000 (no /v1)
    model: str
    read_timeout_s: float | None = 600.0       # per read; only a stuck server reaches it


class StreamError(Exception):
    """The response was 200 but its stream was not a complete, well-formed completion."""


def completion_body(target: Target, req: BenchRequest) -> dict:
    return {"model": target.model, "prompt": list(req.prompt_token_ids), "max_tokens": req.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}


async def stream_completion(client: httpx.AsyncClient, target: Target, req: BenchRequest,
                            clock: Clock = time.perf_counter) -> StreamRecord:
    """Send one streamed completion and record its timeline; never raises for a failed request."""
    record = StreamRecord(req.request_id, len(req.prompt_token_ids), send_s=clock())
    try:
        async with client.stream("POST", "/v1/completions", json=completion_body(target, req)) as response:
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


async def run_load(target: Target, requests: Sequence[BenchRequest], arrivals: ArrivalProcess,
                   warmup: Sequence[BenchRequest] = (), clock: Clock = time.perf_counter) -> LoadResult:
    """Send `warmup` (all at once, not counted), then `requests` as `arrivals` decides; time the latter."""
    async with make_client(target, arrivals.max_in_flight) as client:
        warm_records: list[StreamRecord] = []

        async def send_warmup(req: BenchRequest) -> None:
            warm_records.append(await stream_completion(client, target, req, clock))

        if warmup:
            await ClosedLoop(len(warmup)).drive(warmup, send_warmup)
        records: list[StreamRecord] = []

        async def send(req: BenchRequest) -> None:
            records.append(await stream_completion(client, target, req, clock))

        cpu_start, start = time.process_time(), clock()
        await arrivals.drive(requests, send)
        wall_s, cpu_s = clock() - start, time.process_time() - cpu_start
    return LoadResult(wall_s, records, client_cpu_s=cpu_s, warmup_failures=sum(not r.ok for r in warm_records))


def run_load_sync(target: Target, requests: Sequence[BenchRequest], arrivals: ArrivalProcess,
                  warmup: Sequence[BenchRequest] = ()) -> LoadResult:
    """`run_load` on a fresh event loop, for synchronous callers (bench scripts, tests)."""
    return asyncio.run(run_load(target, requests, arrivals, warmup))
