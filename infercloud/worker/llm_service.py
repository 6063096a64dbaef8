"""LLMService: serves /v1/chat/completions and /v1/completions for one model on an AsyncLLMEngine.

Flow of a request: admit (bounded in-flight count, else 503 + Retry-After) -> prompt token ids (chat
template or plain prompt) -> SamplingParams (invalid values: 400 naming the field) -> engine stream.
The first engine output is awaited before any byte is sent, so a request the engine refuses still
gets a proper status code. Plain responses watch for the client leaving and abort the request then;
streams are aborted by Starlette cancelling them on disconnect.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from infercloud.engine.async_engine import AsyncLLMEngine, EngineDeadError
from infercloud.engine.outputs import RequestOutput
from infercloud.engine.request import TokenLogprob
from infercloud.engine.sampling import InvalidParamError, SamplingParams
from infercloud.engine.tokenizer import ChatTemplateError
from infercloud.openai.asgi import until_disconnect
from infercloud.openai.errors import APIError, bad_request, overloaded
from infercloud.openai.protocol import USAGE_KEY_HEADER, ChatCompletionRequest, CompletionRequest
from infercloud.worker.metrics import ServerMetrics
from infercloud.openai.sse import sse_done, sse_event

# request fields that map one-to-one onto SamplingParams when given
_DIRECT_FIELDS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "top_k", "min_p",
                  "repetition_penalty", "min_tokens", "ignore_eos", "n")


@dataclass
class _Choice:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


class LLMService:
    def __init__(self, name: str, engine: AsyncLLMEngine, metrics: ServerMetrics, max_waiting: int,
                 clock: Callable[[], float] = time.monotonic, recent_usage: "RecentUsage | None" = None):
        self.name = name
        self.engine = engine
        self.tokenizer = engine.engine.tokenizer
        self.max_model_len = engine.engine.max_model_len
        self.metrics = metrics
        self.max_in_flight = engine.engine.config.max_num_seqs + max_waiting
        self.clock = clock
        self.recent_usage = recent_usage
        self.in_flight = 0

    # -- endpoints ---------------------------------------------------------------------------------
    async def chat(self, body: ChatCompletionRequest, request: Request):
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        try:
            prompt_ids = self.tokenizer.encode_chat(messages)
        except ChatTemplateError as exc:
            raise bad_request(str(exc), param="messages") from exc
        top = body.top_logprobs if body.logprobs else None
        if body.top_logprobs is not None and not body.logprobs:
            raise bad_request("top_logprobs requires logprobs to be true", param="top_logprobs")
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = self._params(body, prompt_ids, max_tokens, None if not body.logprobs else (top or 0))
        return await self._serve(body, request, "chat", prompt_ids, params)

    async def completion(self, body: CompletionRequest, request: Request):
        if isinstance(body.prompt, str):
            prompt_ids = self.tokenizer.encode(body.prompt)
        else:
            prompt_ids = list(body.prompt)
        params = self._params(body, prompt_ids, body.max_tokens, body.logprobs)
        return await self._serve(body, request, "completion", prompt_ids, params)

    # -- shared machinery --------------------------------------------------------------------------
    def _params(self, body, prompt_ids: list[int], max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        if not prompt_ids:
            raise bad_request("The prompt is empty.", param="prompt")
        if len(prompt_ids) >= self.max_model_len:
            raise bad_request(f"This model's maximum context length is {self.max_model_len} tokens, but the prompt "
                              f"has {len(prompt_ids)} tokens.", param="messages", code="context_length_exceeded")
        given = {f: getattr(body, f) for f in _DIRECT_FIELDS if getattr(body, f) is not None}
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        try:
            return SamplingParams(max_tokens=max_tokens or self.max_model_len - len(prompt_ids), stop=stop,
                                  logprobs=logprobs, **given)
        except InvalidParamError as exc:
            raise bad_request(str(exc), param=exc.param) from exc

    async def _serve(self, body, request: Request, kind: str, prompt_ids: list[int], params: SamplingParams):
        if self.in_flight >= self.max_in_flight:
            self.metrics.request_done(self.name, kind, "overloaded")
            raise overloaded(f"Too many requests queued for {self.name} ({self.max_in_flight}); retry shortly.")
        self.in_flight += 1
        request_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        resume = list(body.resume_token_ids or [])
        stream = self.engine.generate(prompt_ids, params, request_id=request_id, resume_token_ids=resume,
                                      priority=-body.priority, cache_salt=body.cache_salt or None)
        try:
            first = await stream.__anext__()
        except BaseException as exc:
            self.in_flight -= 1
            await stream.aclose()
            self.metrics.request_done(self.name, kind, "error")
            if isinstance(exc, InvalidParamError):
                raise bad_request(str(exc), param=exc.param, code="context_length_exceeded") from exc
            if isinstance(exc, EngineDeadError):
                raise APIError(503, str(exc), type="overloaded_error", code="engine_dead") from exc
            raise
        usage_key = request.headers.get(USAGE_KEY_HEADER) or request.headers.get("x-request-id")
        ctx = _Ctx(request_id, kind, int(time.time()), prompt_ids, params, body, len(resume), usage_key=usage_key,
                   last=first)
        if body.stream:
            options = body.stream_options
            include_usage = bool(options and (options.include_usage or options.continuous_usage_stats))
            return StreamingResponse(self._sse(ctx, first, stream, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Request-Id": request_id})
        return await self._complete(ctx, first, stream, request)

    async def _complete(self, ctx: "_Ctx", first: RequestOutput, stream: AsyncIterator[RequestOutput],
                        request: Request) -> JSONResponse:
        choices = [_Choice() for _ in range(ctx.params.n)]
        outcome = "aborted"

        async def collect() -> RequestOutput:
            _accumulate(choices, first)
            async for out in stream:
                _accumulate(choices, out)
                ctx.last = out
            return ctx.last

        try:
            last = await until_disconnect(request, collect())
            outcome = "ok"
        finally:
            ctx.completion_tokens = sum(len(c.token_ids) for c in choices)
            await self._end(ctx, stream, outcome)
        self.metrics.observe_request(self.name, last, sum(len(c.token_ids) for c in choices))
        return JSONResponse(ctx.response(choices, last, self._fmt_logprobs), headers={"X-Request-Id": ctx.request_id})

    async def _sse(self, ctx: "_Ctx", first: RequestOutput, stream: AsyncIterator[RequestOutput],
                   include_usage: bool) -> AsyncIterator[str]:
        ctx.completion_tokens = ctx.num_resumed
        continuous = bool(ctx.body.stream_options and ctx.body.stream_options.continuous_usage_stats)
        outcome = "aborted"
        last = first
        try:
            if ctx.kind == "chat" and not ctx.num_resumed:  # a resumed stream's client has had the role chunk
                for i in range(ctx.params.n):
                    yield sse_event(ctx.chunk(i, {"role": "assistant", "content": ""}, None, None))
            out = first
            while True:
                ctx.last = last = out
                for c in out.outputs:
                    ctx.completion_tokens += len(c.delta_token_ids)
                    lp = self._fmt_logprobs(ctx.kind, c.delta_logprobs) if c.delta_logprobs else None
                    if c.delta_text or c.finish_reason or lp or (ctx.return_token_ids and c.delta_token_ids):
                        delta = {"content": c.delta_text} if ctx.kind == "chat" else c.delta_text
                        chunk = ctx.chunk(c.index, delta, c.finish_reason, lp, c.delta_token_ids)
                        if continuous:
                            chunk["usage"] = ctx.usage(out, ctx.completion_tokens)
                        yield sse_event(chunk)
                if out.finished:
                    break
                out = await stream.__anext__()
            if include_usage:
                yield sse_event(ctx.usage_chunk(last, ctx.completion_tokens))
            yield sse_done()
            outcome = "ok"
        finally:
            await self._end(ctx, stream, outcome)
            if outcome == "ok":
                self.metrics.observe_request(self.name, last, ctx.completion_tokens)

    async def _end(self, ctx: "_Ctx", stream: AsyncIterator[RequestOutput], outcome: str) -> None:
        """Every admitted request ends here once: the slot is released, an unfinished stream aborted,
        and what it used is kept for the gateway to read (by its X-Request-Id) if the client left."""
        self.in_flight -= 1
        if outcome != "ok":
            await stream.aclose()
        self.metrics.request_done(self.name, ctx.kind, outcome)
        if ctx.usage_key and self.recent_usage is not None:
            self.recent_usage.put(ctx.usage_key, {**ctx.usage(ctx.last, ctx.completion_tokens), "outcome": outcome})

    def _fmt_logprobs(self, kind: str, entries: list[TokenLogprob]) -> dict:
        tok = self.tokenizer

        def s(token_id: int) -> str:
            return tok.decode([token_id], skip_special_tokens=False)

        if kind == "chat":
            return {"content": [{"token": s(e.token_id), "logprob": e.logprob, "bytes": list(s(e.token_id).encode()),
                                 "top_logprobs": [{"token": s(t), "logprob": lp, "bytes": list(s(t).encode())}
                                                  for t, lp in e.top]} for e in entries]}
        return {"tokens": [s(e.token_id) for e in entries], "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{s(t): lp for t, lp in e.top} for e in entries]}

    def state(self) -> dict:
        stats = self.engine.engine.stats()
        return {"kind": "chat", "loaded": True, "in_flight": self.in_flight, "running": stats.num_running,
                "waiting": stats.num_waiting, "kv_blocks_used": stats.kv_blocks_used,
                "kv_blocks_total": stats.kv_blocks_total, "prefix_cache_hit_rate": stats.prefix_cache_hit_rate,
                "prefix_cache_hit_tokens": stats.prefix_cache_hit_tokens,
                "num_preemptions": stats.num_preemptions, "step_time_s": stats.last_step_s,
                "generated_tokens": stats.num_generated_tokens,
                "recent_prefix_block_hashes": self.engine.engine.kv.recent_block_hashes(256),
                "max_model_len": self.max_model_len, "block_size": self.engine.engine.config.block_size}


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


def _accumulate(choices: list[_Choice], out: RequestOutput) -> None:
    for c in out.outputs:
        ch = choices[c.index]
        ch.text, ch.token_ids = c.text, c.token_ids
        ch.logprobs += c.delta_logprobs or []
        ch.finish_reason = c.finish_reason or ch.finish_reason


@dataclass
class _Ctx:
    """The fixed facts of one response (ids, kind, timestamps) and its JSON shapes."""

    request_id: str
    kind: str
    created: int
    prompt_ids: list[int]
    params: SamplingParams
    body: ChatCompletionRequest | CompletionRequest
    num_resumed: int = 0         # output tokens another replica generated before this one took over
    usage_key: str | None = None  # what this request used is kept under it: the gateway's usage key, else
                                  # the caller's X-Request-Id
    last: RequestOutput | None = None  # the latest engine output (its metrics are live)
    completion_tokens: int = 0   # so far (resumed tokens included)
    sent_prompt_ids: bool = False

    @property
    def return_token_ids(self) -> bool:
        return bool(self.body.return_token_ids)

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    def usage(self, out: RequestOutput, completion_tokens: int) -> dict:
        """OpenAI's usage object, plus the device-seconds attributed to the request (its share of each step)."""
        return {"prompt_tokens": len(self.prompt_ids), "completion_tokens": completion_tokens,
                "total_tokens": len(self.prompt_ids) + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": out.num_cached_tokens},
                "device_seconds": round(sum(m.device_seconds for m in out.metrics), 6)}

    def response(self, choices: list[_Choice], last: RequestOutput, fmt_logprobs) -> dict:
        rendered = []
        for i, c in enumerate(choices):
            lp = fmt_logprobs(self.kind, c.logprobs) if self.params.logprobs is not None else None
            if self.kind == "chat":
                rendered.append({"index": i, "message": {"role": "assistant", "content": c.text},
                                 "logprobs": lp, "finish_reason": c.finish_reason})
            else:
                rendered.append({"index": i, "text": c.text, "logprobs": lp, "finish_reason": c.finish_reason})
            if self.return_token_ids:
                rendered[-1]["token_ids"] = c.token_ids
        body = {"id": self.request_id, "object": self.object, "created": self.created, "model": self.body.model,
                "choices": rendered, "usage": self.usage(last, sum(len(c.token_ids) for c in choices))}
        if self.return_token_ids:
            body["prompt_token_ids"] = self.prompt_ids
        return body

    def chunk(self, index: int, delta, finish_reason: str | None, logprobs: dict | None,
              token_ids: list[int] | None = None) -> dict:
        if self.kind == "chat":
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            obj = "text_completion"
        body = {"id": self.request_id, "object": obj, "created": self.created, "model": self.body.model,
                "choices": [choice]}
        if self.return_token_ids:
            choice["token_ids"] = list(token_ids or [])
            if not self.sent_prompt_ids:  # vLLM's shape: the prompt's ids ride on the first chunk only
                body["prompt_token_ids"] = self.prompt_ids
                self.sent_prompt_ids = True
        return body

    def usage_chunk(self, out: RequestOutput, completion_tokens: int) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.body.model,
                "choices": [], "usage": self.usage(out, completion_tokens)}
