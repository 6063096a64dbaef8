"""The pipelines' HTTP surface: a pipeline called as a model of /v1/chat/completions, and /v1/pipelines.

  POST /v1/chat/completions {"model": "<pipeline>", "messages": [...], "stream": ...}
      the last message (the user's) is the question; the answer is a chat completion (or its SSE stream)
      whose `usage` adds `stages` (each stage's tokens) and whose `infercloud` field holds the sources,
      every stage's status and time, and the checks; headers X-Request-Id, X-Infercloud-Pipeline and
      Server-Timing (the stages done when the headers leave: all of them, or those before generate when
      streamed; a stream's last chunk, `choices: []`, carries the rest)
  POST /v1/pipelines/{name} {"input": "..." | "messages": [...], sampling fields}
      the same run, answered with its full trace: {"object": "pipeline.run", "output_text", "sources",
      "stages", "checks", "usage", ...}; a pipeline without a generate stage answers its sources only
  GET  /v1/pipelines                  the pipelines offered here
  GET/POST /admin/pipelines, DELETE /admin/pipelines/{name}   made and removed at run time (admin keys on a
      gateway, the internal token on a single box)
A run's stage that runs out of time and must fail is a 504 `pipeline_deadline_exceeded`; a stage's call
that fails (a collection the caller does not have: 404) is that error, naming the stage.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from infercloud.collections.embed import CallContext
from infercloud.openai.asgi import read_json_object
from infercloud.openai.errors import APIError, bad_request
from infercloud.openai.protocol import ChatCompletionRequest, validation_error
from infercloud.openai.sse import ClosingStream, sse_done, sse_event
from infercloud.pipelines.registry import PipelineRegistry, describe, not_found
from infercloud.pipelines.runner import Calls, PipelineRun
from infercloud.pipelines.trace import StageFailed
from infercloud.pipelines.spec import PipelineSpec

Authorize = Callable[[Request], Awaitable[object]]   # raises 401/403 unless the caller may; returns who asked
Changed = Callable[[object, str, str, dict | None, dict | None], None]   # (who, action, what, before, after)

CHAT_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
                         "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "user",
                         "top_k", "min_p", "repetition_penalty", "n", "service_tier", "response_format"})
RUN_FIELDS = (CHAT_FIELDS - {"model", "stream", "stream_options", "n"}) | {"input"}


def _text(content: object) -> str | None:
    """A message's text: a string, or OpenAI's list of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text") or "") for p in content)
    return None


def conversation(body: dict, allowed: frozenset[str]) -> list[dict]:
    """The messages of a pipeline call (roles and texts), checked: a 400 naming what a pipeline cannot take."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(f"'{unknown[0][:50]}' is not supported when calling a pipeline.", param=unknown[0][:50],
                          code="unsupported_parameter")
    if body.get("n") not in (None, 1):
        raise bad_request("A pipeline answers one choice (n must be 1).", param="n")
    messages = body.get("messages")
    if messages is None and isinstance(body.get("input"), str):
        messages = [{"role": "user", "content": body["input"]}]
    if not isinstance(messages, list) or not messages:
        raise bad_request("A pipeline needs the question: 'messages' (or 'input') with a user message last.",
                          param="messages")
    out = []
    for i, message in enumerate(messages):
        text = _text(message.get("content")) if isinstance(message, dict) else None
        if text is None or message.get("role") not in ("system", "user", "assistant"):
            raise bad_request(f"messages[{i}] must have a role (system, user or assistant) and text content.",
                              param=f"messages[{i}]")
        out.append({"role": message["role"], "content": text})
    if out[-1]["role"] != "user" or not out[-1]["content"].strip():
        raise bad_request("The last message must be the user's question.", param="messages")
    sampling = {k: v for k, v in body.items() if k not in ("model", "messages", "input", "service_tier")}
    try:   # the sampling fields are held to a chat completion's rules before any stage runs
        ChatCompletionRequest.model_validate({**sampling, "model": "-", "messages": out})
    except ValidationError as exc:
        raise validation_error(exc) from exc
    return out


class PipelineService:
    def __init__(self, registry: PipelineRegistry, calls: Calls, request_id_of: Callable[[Request], str]):
        self.registry = registry
        self.calls = calls
        self.request_id_of = request_id_of

    def _run(self, spec: PipelineSpec, request: Request, messages: list[dict]) -> PipelineRun:
        ctx = CallContext(request, self.request_id_of(request))
        return PipelineRun(spec, self.calls, ctx, messages, started=self.calls.clock())

    def _headers(self, run: PipelineRun) -> dict[str, str]:
        return {"X-Request-Id": run.ctx.request_id, "X-Infercloud-Pipeline": run.spec.name,
                "Server-Timing": run.server_timing()}

    async def chat(self, request: Request, spec: PipelineSpec, body: dict) -> Response:
        """A chat completion whose model is the pipeline `spec`."""
        messages = conversation(body, CHAT_FIELDS)
        if spec.stage("generate") is None:
            raise bad_request(f"Pipeline '{spec.name}' has no generate stage; call POST /v1/pipelines/{spec.name} "
                              "for its sources.", param="model")
        run = self._run(spec, request, messages)
        try:
            await run.before_generate()
            if body.get("stream") is True:
                return await self._stream(run, body)
            answer = await run.generate(body)
            await run.after_generate()
        except StageFailed as exc:
            exc.error.headers.setdefault("X-Request-Id", run.ctx.request_id)
            raise exc.error from None
        answer.update(model=spec.name, usage=run.usage(), infercloud=run.report())
        return JSONResponse(answer, headers=self._headers(run))

    async def _stream(self, run: PipelineRun, body: dict) -> Response:
        chunks = run.generate_stream(body)
        first = await chunks.__anext__()   # a stage failing before its first token is an HTTP error
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return ClosingStream(chunks, self._events(run, first, chunks, include_usage),
                             media_type="text/event-stream", headers=self._headers(run))

    async def _events(self, run: PipelineRun, first: dict, chunks: AsyncIterator[dict],
                      include_usage: bool) -> AsyncIterator[str]:
        last = first
        try:
            yield sse_event({**first, "model": run.spec.name})
            async for chunk in chunks:
                last = chunk
                yield sse_event({**chunk, "model": run.spec.name})
            await run.after_generate()
        except (StageFailed, APIError) as exc:
            error = exc.error if isinstance(exc, StageFailed) else exc
            yield sse_event(error.body())
            yield sse_done()
            return
        final = {"id": last.get("id"), "object": "chat.completion.chunk", "created": last.get("created"),
                 "model": run.spec.name, "choices": [], "infercloud": run.report()}
        if include_usage:
            final["usage"] = run.usage()
        yield sse_event(final)
        yield sse_done()

    async def run_endpoint(self, request: Request, name: str) -> Response:
        """POST /v1/pipelines/{name}: the run with its whole trace."""
        spec = await self.registry.get(name)
        if spec is None:
            raise not_found(name)
        _, body = await read_json_object(request)
        if body.get("stream") is not None:
            raise bad_request("POST /v1/pipelines/{name} answers at once; stream through /v1/chat/completions with "
                              "the pipeline as the model.", param="stream", code="unsupported_parameter")
        run = self._run(spec, request, conversation(body, RUN_FIELDS))
        try:
            await run.before_generate()
            if spec.stage("generate") is not None:
                await run.generate(body)
                await run.after_generate()
        except StageFailed as exc:
            exc.error.headers.setdefault("X-Request-Id", run.ctx.request_id)
            raise exc.error from None
        return JSONResponse({"id": f"piperun-{uuid.uuid4().hex}", "object": "pipeline.run", "created": int(time.time()),
                             "pipeline": spec.name, "output_text": run.answer, "usage": run.usage(), **run.report()},
                            headers=self._headers(run))


def install_routes(app: FastAPI, service: PipelineService, authorize_admin: Authorize,
                   authorize_caller: Authorize, on_change: Changed | None = None) -> None:
    """/v1/pipelines (callers: `authorize_caller`) and /admin/pipelines (`authorize_admin`, whose answer, who
    asked, `on_change` hears with each pipeline made or deleted: the gateway's audit log)."""
    registry = service.registry

    @app.post("/v1/pipelines/{name}")
    async def run_pipeline(name: str, request: Request):
        await authorize_caller(request)
        return await service.run_endpoint(request, name)

    @app.get("/v1/pipelines")
    async def list_pipelines(request: Request):
        await authorize_caller(request)
        return {"object": "list", "data": [describe(p) for p in await registry.all()]}

    @app.get("/admin/pipelines")
    async def admin_list(request: Request):
        await authorize_admin(request)
        return {"object": "list", "data": [describe(p) for p in await registry.all()]}

    @app.post("/admin/pipelines")
    async def admin_create(request: Request):
        who = await authorize_admin(request)
        _, body = await read_json_object(request)
        made = describe(await registry.create(body))
        if on_change is not None:
            on_change(who, "create_pipeline", f"create pipeline {made['id']}", None, made)
        return made

    @app.delete("/admin/pipelines/{name}")
    async def admin_delete(name: str, request: Request):
        who = await authorize_admin(request)
        before = await registry.get(name) if on_change is not None else None
        await registry.delete(name)
        if on_change is not None:
            on_change(who, "delete_pipeline", f"delete pipeline {name}",
                      describe(before) if before is not None else None, None)
        return {"id": name, "object": "pipeline.deleted", "deleted": True}
