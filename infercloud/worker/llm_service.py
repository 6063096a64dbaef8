"""LLMService: serves /v1/chat/completions and /v1/completions for one model on an AsyncLLMEngine.

Flow of a request: admit (bounded in-flight count, else 503 + Retry-After) -> prompt token ids (chat
template with tools, or plain prompts) -> SamplingParams with the output constraint, if any, compiled off
the event loop (invalid values and schemas: 400 naming the field) -> one engine stream per prompt.
The first engine output of each is awaited before any byte is sent, so a request the engine refuses
still gets a proper status code. Plain responses watch for the client leaving and abort the request
then; streams are aborted by Starlette cancelling them on disconnect.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from infercloud.contracts import ModelState
from infercloud.engine.async_engine import AsyncLLMEngine, EngineDeadError
from infercloud.engine.outputs import RequestOutput
from infercloud.engine.request import TokenLogprob
from infercloud.engine.sampling import InvalidParamError, SamplingParams
from infercloud.engine.structured.spec import StructuredSpec
from infercloud.engine.tokenizer import ChatTemplateError
from infercloud.models.local import LocalModel
from infercloud.openai.asgi import until_disconnect
from infercloud.openai.errors import APIError, bad_request, overloaded
from infercloud.openai.protocol import USAGE_KEY_HEADER, ChatCompletionRequest, CompletionRequest, max_new_tokens
from infercloud.openai.sse import sse_done, sse_event
from infercloud.worker.constraints import requested_spec
from infercloud.worker.metrics import ServerMetrics
from infercloud.worker.replies import Choice, Reply
from infercloud.openai.tool_calls import ToolCallParser, chat_prompt_ids, offered_tools
from infercloud.observability.tracing import Tracing, finish, wall_ns
from opentelemetry.trace import set_span_in_context

# request fields that map one-to-one onto SamplingParams when given
_DIRECT_FIELDS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "top_k", "min_p",
                  "repetition_penalty", "min_tokens", "ignore_eos", "n", "stop_token_ids")


class LLMService:
    def __init__(self, name: str, engine: AsyncLLMEngine, metrics: ServerMetrics, max_waiting: int,
                 clock: Callable[[], float] = time.monotonic, recent_usage: "RecentUsage | None" = None,
                 tracing: Tracing | None = None):
        self.name = name
        self.engine = engine
        self.tokenizer = engine.engine.tokenizer
        self.max_model_len = engine.engine.max_model_len
        self.metrics = metrics
        self.max_in_flight = engine.engine.config.max_num_seqs + max_waiting
        self.clock = clock
        self.recent_usage = recent_usage
        self.tracing = tracing
        # what a request leaves out comes from the model's generation_config.json, as in vLLM
        self.sampling_defaults = LocalModel.open(engine.engine.model_dir).sampling_defaults()
        self.in_flight = 0
        # finished requests, oldest first: (clock time, TTFT, mean gap between tokens) for the dashboard's plots
        self.recent: deque[tuple[float, float, float | None]] = deque(maxlen=4096)

    # -- endpoints ---------------------------------------------------------------------------------
    async def chat(self, body: ChatCompletionRequest, request: Request):
        spec = requested_spec(body)
        tools = offered_tools(body.tools, body.tool_choice)
        try:
            prompt_ids = chat_prompt_ids(self.tokenizer, body.messages, body.tools, body.tool_choice)
        except ChatTemplateError as exc:
            raise bad_request(str(exc), param="messages") from exc
        top = body.top_logprobs if body.logprobs else None
        if body.top_logprobs is not None and not body.logprobs:
            raise bad_request("top_logprobs requires logprobs to be true", param="top_logprobs")
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = self._params(body, [prompt_ids], max_tokens, None if not body.logprobs else (top or 0), spec)
        return await self._serve(body, request, "chat", [prompt_ids], params, tools=tools is not None)

    async def completion(self, body: CompletionRequest, request: Request):
        prompts = body.prompts()
        ids = [self.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        if body.echo and body.logprobs is not None:
            raise bad_request("echo with logprobs is not supported (it needs the prompt's logprobs).", param="echo")
        if body.resume_token_ids and len(ids) > 1:
            raise bad_request("resume_token_ids needs a single prompt.", param="resume_token_ids")
        params = self._params(body, ids, body.max_tokens, body.logprobs, requested_spec(body))
        echo = [p if isinstance(p, str) else self.tokenizer.decode(p) for p in prompts] if body.echo else None
        return await self._serve(body, request, "completion", ids, params, echo_texts=echo)

    # -- shared machinery --------------------------------------------------------------------------
    def _params(self, body, prompts: list[list[int]], max_tokens: int | None, logprobs: int | None,
                spec: StructuredSpec | None) -> SamplingParams:
        for ids in prompts:
            if not ids:
                raise bad_request("The prompt is empty.", param="prompt")
            if len(ids) >= self.max_model_len:
                raise bad_request(f"This model's maximum context length is {self.max_model_len} tokens, but the "
                                  f"prompt has {len(ids)} tokens.", param="messages", code="context_length_exceeded")
        given = {f: getattr(body, f) for f in _DIRECT_FIELDS if getattr(body, f) is not None}
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        longest = max(len(ids) for ids in prompts)
        try:
            return SamplingParams(max_tokens=max_new_tokens(max_tokens, self.max_model_len, longest), stop=stop,
                                  logprobs=logprobs, logit_bias=_logit_bias(body.logit_bias), structured=spec,
                                  **{**self.sampling_defaults, **given})
        except InvalidParamError as exc:
            raise bad_request(str(exc), param=exc.param) from exc

    async def _compile(self, spec: StructuredSpec) -> None:
        """Compile (or find cached) the request's grammar off the event loop: a bad one is a 400 here."""
        try:
            await asyncio.to_thread(self.engine.engine.grammars.compile, spec)
        except InvalidParamError as exc:
            raise bad_request(str(exc), param=exc.param) from exc

    async def _serve(self, body, request: Request, kind: str, prompts: list[list[int]], params: SamplingParams,
                     tools: bool = False, echo_texts: list[str] | None = None):
        if params.structured is not None:
            await self._compile(params.structured)
        if self.in_flight >= self.max_in_flight:
            self.metrics.request_done(self.name, kind, "overloaded")
            raise overloaded(f"Too many requests queued for {self.name} ({self.max_in_flight}); retry shortly.")
        self.in_flight += 1
        request_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        resume = list(body.resume_token_ids or [])
        streams = [self.engine.generate(ids, params, request_id=request_id if len(prompts) == 1 else f"{request_id}-{k}",
                                        resume_token_ids=resume, priority=body.priority, deadline_s=body.deadline_s,
                                        cache_salt=body.cache_salt or None) for k, ids in enumerate(prompts)]
        firsts = await asyncio.gather(*(s.__anext__() for s in streams), return_exceptions=True)
        failed = next((f for f in firsts if isinstance(f, BaseException)), None)
        if failed is not None:
            self.in_flight -= 1
            await _close(streams)
            self.metrics.request_done(self.name, kind, "error")
            if isinstance(failed, InvalidParamError):
                raise bad_request(str(failed), param=failed.param, code="context_length_exceeded") from failed
            if isinstance(failed, EngineDeadError):
                raise APIError(503, str(failed), type="overloaded_error", code="engine_dead") from failed
            raise failed
        usage_key = request.headers.get(USAGE_KEY_HEADER) or request.headers.get("x-request-id")
        reply = Reply(request_id, kind, int(time.time()), prompts, params, body, len(resume), usage_key=usage_key,
                      tools=tools, echo_texts=echo_texts, last=dict(enumerate(firsts)))
        if self.tracing is not None:
            self._trace_start(reply, request, firsts)
        outputs = _merged(streams, list(firsts))
        if body.stream:
            options = body.stream_options
            include_usage = bool(options and (options.include_usage or options.continuous_usage_stats))
            return StreamingResponse(self._sse(reply, outputs, streams, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Request-Id": request_id})
        return await self._complete(reply, outputs, streams, request)

    async def _complete(self, reply: Reply, outputs: AsyncIterator[tuple[int, RequestOutput]],
                        streams: list, request: Request) -> JSONResponse:
        choices = [Choice() for _ in range(len(reply.prompts) * reply.n)]
        outcome = "aborted"

        async def collect() -> None:
            async for k, out in outputs:
                reply.last[k] = out
                for c in out.outputs:
                    ch = choices[reply.choice_index(k, c.index)]
                    ch.text, ch.token_ids = c.text, c.token_ids
                    ch.logprobs += c.delta_logprobs or []
                    ch.finish_reason = c.finish_reason or ch.finish_reason

        try:
            await until_disconnect(request, collect())
            outcome = "ok"
        finally:
            reply.completion_tokens = sum(len(c.token_ids) for c in choices)
            await self._end(reply, outputs, streams, outcome)
        self._observe(reply)
        return JSONResponse(reply.response(choices, self._fmt_logprobs), headers={"X-Request-Id": reply.request_id})

    async def _sse(self, reply: Reply, outputs: AsyncIterator[tuple[int, RequestOutput]], streams: list,
                   include_usage: bool) -> AsyncIterator[str]:
        reply.completion_tokens = reply.num_resumed
        continuous = bool(reply.body.stream_options and reply.body.stream_options.continuous_usage_stats)
        outcome = "aborted"
        try:
            if reply.kind == "chat" and not reply.num_resumed:  # a resumed stream's client has had the role chunk
                for i in range(len(reply.prompts) * reply.n):
                    yield sse_event(reply.chunk(i, {"role": "assistant", "content": ""}, None, None))
            if reply.tools and reply.num_resumed:   # the parser goes on from where the first replica was
                reply.parsers[0] = parser = ToolCallParser()
                parser.feed(self.tokenizer.decode(reply.body.resume_token_ids))
            async for k, out in outputs:
                reply.last[k] = out
                for c in out.outputs:
                    reply.completion_tokens += len(c.delta_token_ids)
                    for chunk in self._chunks(reply, reply.choice_index(k, c.index), c):
                        if continuous:
                            chunk["usage"] = reply.usage(reply.completion_tokens)
                        yield sse_event(chunk)
            if include_usage:
                yield sse_event(reply.usage_chunk(reply.completion_tokens))
            yield sse_done()
            outcome = "ok"
        finally:
            await self._end(reply, outputs, streams, outcome)
            if outcome == "ok":
                self._observe(reply)

    def _chunks(self, reply: Reply, index: int, c) -> list[dict]:
        """The chunks one sequence's new output becomes (none when nothing a client sees changed)."""
        lp = None
        if c.delta_logprobs:
            offset = reply.offsets.get(index, len(reply.echo_texts[index // reply.n]) if reply.echo_texts else 0)
            lp = self._fmt_logprobs(reply.kind, c.delta_logprobs, offset)
            if reply.kind == "completion":
                reply.offsets[index] = offset + sum(len(t) for t in lp["tokens"])
        if reply.kind == "chat" and reply.tools:
            parser = reply.parsers.setdefault(index, ToolCallParser())
            deltas = parser.feed(c.delta_text) + (parser.finish() if c.finish_reason else [])
            chunks = [reply.chunk(index, d, None, None) for d in deltas]
            if c.finish_reason:
                reason = "tool_calls" if parser.calls and c.finish_reason == "stop" else c.finish_reason
                chunks.append(reply.chunk(index, {}, reason, None))
            if lp or (reply.return_token_ids and c.delta_token_ids):
                if not chunks:
                    chunks.append(reply.chunk(index, {}, None, None))
                chunks[0]["choices"][0]["logprobs"] = lp
                if reply.return_token_ids:
                    chunks[0]["choices"][0]["token_ids"] = list(c.delta_token_ids)
            return chunks
        text = c.delta_text
        if reply.echo_texts and index not in reply.offsets and not reply.num_resumed:
            reply.offsets.setdefault(index, len(reply.echo_texts[index // reply.n]))
            text = reply.echo_texts[index // reply.n] + text
        if not (text or c.finish_reason or lp or (reply.return_token_ids and c.delta_token_ids)):
            return []
        delta = {"content": text} if reply.kind == "chat" else text
        return [reply.chunk(index, delta, c.finish_reason, lp, c.delta_token_ids)]

    def _observe(self, reply: Reply) -> None:
        now = self.clock()
        for out in reply.last.values():
            self.metrics.observe_request(self.name, out, sum(len(c.token_ids) for c in out.outputs)
                                         if len(reply.last) > 1 else reply.completion_tokens, reply.params)
            m = out.metrics[0] if out.metrics else None
            if m is not None and m.first_token_time is not None:
                gaps = m.token_gaps
                self.recent.append((now, m.first_token_time - m.arrival_time, sum(gaps) / len(gaps) if gaps else None))

    async def _end(self, reply: Reply, outputs: AsyncIterator, streams: list, outcome: str) -> None:
        """Every admitted request ends here once: the slot is released, an unfinished stream aborted,
        and what it used is kept for the gateway to read (by its usage key) if the client left."""
        self.in_flight -= 1
        if outcome != "ok":
            await outputs.aclose()
            await _close(streams)
        self.metrics.request_done(self.name, reply.kind, outcome)
        if reply.span is not None:
            self._trace_end(reply, outcome)
        if reply.usage_key and self.recent_usage is not None:
            self.recent_usage.put(reply.usage_key, {**reply.usage(reply.completion_tokens), "outcome": outcome})

    def _trace_start(self, reply: Reply, request: Request, firsts: list[RequestOutput]) -> None:
        """The request's span, a child of the gateway attempt's traceparent, and its `queue` and `prefill` spans
        (with one `prefill.chunk` per engine step that computed its prompt) at once: the first token is out, so
        they are over, and they are sent even if this process dies mid-stream."""
        metrics = [m for out in firsts for m in out.metrics]
        clock = _SpanClock(self.tracing)
        begin = min((m.arrival_time for m in metrics), default=clock.now)
        reply.span = self.tracing.start("worker.request", self.tracing.from_headers(request.headers), {
            "infercloud.model": self.name, "infercloud.kind": reply.kind, "infercloud.request_id": reply.request_id,
            "infercloud.prompt_tokens": sum(len(p) for p in reply.prompts),
            "infercloud.resumed_tokens": reply.num_resumed}, start_ns=clock.ns(begin))
        for m in metrics:
            if m.first_scheduled_time is not None:
                first = m.first_token_time or clock.now
                clock.span("queue", reply.span, m.arrival_time, m.first_scheduled_time)
                prefill = clock.span("prefill", reply.span, m.first_scheduled_time, first,
                                     **{"infercloud.preemptions": m.num_preemptions})
                clock.chunks(prefill, [c for c in list(m.prefill_chunks) if c[1] <= first])

    def _trace_end(self, reply: Reply, outcome: str) -> None:
        """The request's `decode` span (first token to the end) with its `detokenize` span (the detokenizer's
        time on the request's tokens, summed: it runs a few microseconds in each step; drawn from the first
        token) and any prompt recomputed after a preemption (`prefill.chunk`, recompute); then the request's
        own span ends."""
        clock = _SpanClock(self.tracing)
        for out in reply.last.values():
            for m in out.metrics:
                if m.first_token_time is None:
                    continue
                decode = clock.span("decode", reply.span, m.first_token_time, m.finished_time or clock.now,
                                    **{"infercloud.tokens": len(m.token_gaps) + 1})
                clock.span("detokenize", decode, m.first_token_time, m.first_token_time + m.detokenize_s,
                           **{"infercloud.tokens": len(m.token_gaps) + 1, "infercloud.summed": True})
                clock.chunks(decode, [c for c in list(m.prefill_chunks) if c[0] >= m.first_token_time],
                             recompute=True)
        finish(reply.span, None if outcome == "ok" else outcome, outcome=outcome,
               **{"infercloud.completion_tokens": reply.completion_tokens}, end_ns=clock.now_ns)

    def _fmt_logprobs(self, kind: str, entries: list[TokenLogprob], text_offset: int = 0) -> dict:
        tok = self.tokenizer

        def s(token_id: int) -> str:
            return tok.decode([token_id], skip_special_tokens=False)

        if kind == "chat":
            return {"content": [{"token": s(e.token_id), "logprob": e.logprob, "bytes": list(s(e.token_id).encode()),
                                 "top_logprobs": [{"token": s(t), "logprob": lp, "bytes": list(s(t).encode())}
                                                  for t, lp in e.top]} for e in entries]}
        tokens = [s(e.token_id) for e in entries]
        offsets = []
        for t in tokens:
            offsets.append(text_offset)
            text_offset += len(t)
        return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{s(t): lp for t, lp in e.top} for e in entries], "text_offset": offsets}

    def state(self) -> ModelState:
        stats = self.engine.engine.stats()
        return ModelState(kind="chat", in_flight=self.in_flight, running=stats.num_running,
                          waiting=stats.num_waiting, kv_blocks_used=stats.kv_blocks_used,
                          kv_blocks_total=stats.kv_blocks_total, prefix_cache_hit_rate=stats.prefix_cache_hit_rate,
                          prefix_cache_hit_tokens=stats.prefix_cache_hit_tokens,
                          prefix_cache_queried_tokens=stats.prefix_cache_queried_tokens,
                          num_preemptions=stats.num_preemptions, step_time_s=stats.last_step_s,
                          generated_tokens=stats.num_generated_tokens,
                          recent_prefix_block_hashes=tuple(self.engine.engine.kv.recent_block_hashes(256)),
                          max_model_len=self.max_model_len, block_size=self.engine.engine.config.block_size)


class RecentUsage:
    """What recently ended requests used, by the caller's request id (bounded: the oldest are dropped)."""

    def __init__(self, capacity: int = 8192):
        self.capacity = capacity
        self._entries: OrderedDict[str, dict] = OrderedDict()

    def put(self, key: str, usage: dict) -> None:
        self._entries[key] = usage
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    if not bias:
        return None
    try:
        return {int(k): float(v) for k, v in bias.items()}
    except ValueError:
        raise bad_request("logit_bias keys must be token ids.", param="logit_bias") from None


async def _merged(streams: Sequence[AsyncIterator[RequestOutput]],
                  firsts: list[RequestOutput]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(prompt index, output) from every prompt's stream as they come, starting with their first outputs."""
    for k, first in enumerate(firsts):
        yield k, first
    live = [k for k, first in enumerate(firsts) if not first.finished]
    if len(streams) == 1:
        if live:
            async for out in streams[0]:
                yield 0, out
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(k: int) -> None:
        try:
            async for out in streams[k]:
                await queue.put((k, out))
        except Exception as exc:   # noqa: BLE001 - handed to the consumer
            await queue.put((k, exc))
        await queue.put((k, None))

    tasks = [asyncio.create_task(pump(k)) for k in live]
    try:
        remaining = len(tasks)
        while remaining:
            k, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield k, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close(streams: Sequence[AsyncIterator]) -> None:
    for s in streams:
        try:
            await s.aclose()
        except RuntimeError:   # already closed by its pump
            pass


class _SpanClock:
    """Finished spans from the engine's monotonic timestamps, converted to wall time against one reading."""

    def __init__(self, tracing: Tracing):
        self.tracing = tracing
        self.now, self.now_ns = time.monotonic(), time.time_ns()

    def ns(self, monotonic_s: float) -> int:
        return wall_ns(monotonic_s, self.now, self.now_ns)

    def span(self, name: str, parent, start: float, end: float, **attributes):
        span = self.tracing.start(name, set_span_in_context(parent), start_ns=self.ns(start))
        finish(span, end_ns=self.ns(end), **attributes)
        return span

    def chunks(self, parent, chunks: list[tuple[float, float, int]], recompute: bool = False) -> None:
        """One `prefill.chunk` per engine step that computed prompt tokens (before the first token, or after
        it when a preemption made the engine recompute the sequence)."""
        for index, (start, end, tokens) in enumerate(chunks):
            self.span("prefill.chunk", parent, start, end, **{"infercloud.chunk": index, "infercloud.tokens": tokens,
                                                              **({"infercloud.recompute": True} if recompute else {})})
