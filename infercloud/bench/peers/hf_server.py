"""The HF transformers peer's HTTP server: OpenAI `/v1/completions` and `/v1/models` over `generate()`.

    python -m infercloud.bench.peers.hf_server --model-dir DIR --port P [--mode naive|static]

Loads `AutoModelForCausalLM` in fp32 with `--threads` torch threads (default 2) and serves:
- POST /v1/completions: `prompt` as text or token ids (or a one-element list of either),
  `max_tokens` (default 16), `temperature` 0 or absent (greedy; anything else is 400),
  `ignore_eos`, `stream` (SSE `text_completion` chunks, `data: [DONE]`, and a final usage
  chunk when `stream_options.include_usage`). Other sampling fields are ignored.
- GET /v1/models: the one served model; GET /stats: how many `generate()` calls ran and
  with which batch sizes (see hf_batcher.py for the two modes).
Streamed text is the running decode of the generated ids, so the chunks concatenate to
`tokenizer.decode(ids, skip_special_tokens=True)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from infercloud.bench.peers.hf_batcher import GenJob, NaiveRunner, StaticRunner, _Runner

DEFAULT_MAX_TOKENS = 16


class BadRequest(ValueError):
    """A request the server refuses with 400; the message goes to the client."""


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def parse_prompt(prompt, tokenizer) -> list[int]:
    """Token ids of a completions `prompt`: text, ids, or a one-element list of either."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt)
    elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids = list(prompt)
    else:
        raise BadRequest("prompt must be a string or a list of token ids (one prompt per request)")
    if not ids:
        raise BadRequest("prompt is empty")
    if max(ids) >= len(tokenizer) or min(ids) < 0:
        raise BadRequest("prompt holds a token id outside the vocabulary")
    return ids


def parse_limits(body: dict) -> tuple[int, bool]:
    """(max_tokens, ignore_eos) of a request; greedy only."""
    if body.get("temperature") not in (None, 0, 0.0):
        raise BadRequest("this peer is greedy only: temperature must be 0 or absent")
    if body.get("n", 1) != 1:
        raise BadRequest("n must be 1")
    max_tokens = body.get("max_tokens") or DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("max_tokens must be a positive integer")
    return max_tokens, bool(body.get("ignore_eos"))


class CompletionStream:
    """Bridges one job's token ids (from the runner thread) to text deltas on the event loop."""

    def __init__(self, tokenizer, loop: asyncio.AbstractEventLoop) -> None:
        self.tokenizer, self.loop = tokenizer, loop
        self.queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        self.ids: list[int] = []
        self.sent_text = ""

    def emit(self, ids: list[int] | None) -> None:  # called from the runner thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ids)

    async def deltas(self) -> AsyncIterator[str]:
        """Text deltas until the job finishes; holds back a trailing partial UTF-8 character."""
        while (ids := await self.queue.get()) is not None:
            self.ids.extend(ids)
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            if text.endswith("\ufffd") or not text.startswith(self.sent_text):
                continue
            delta, self.sent_text = text[len(self.sent_text):], text
            if delta:
                yield delta
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > len(self.sent_text):
            yield text[len(self.sent_text):]
            self.sent_text = text


def build_app(model, tokenizer, runner: _Runner, served_model: str) -> FastAPI:
    """The FastAPI app; `runner` is started here and owns the model from now on."""
    app = FastAPI(title=f"hf-transformers peer ({type(runner).__name__})")
    eos_ids = runner.eos_ids
    runner.start()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": served_model, "object": "model", "owned_by": "hf-peer"}]}

    @app.get("/stats")
    async def stats() -> dict:
        return runner.stats.to_json()

    @app.post("/v1/completions")
    async def completions(request: Request):
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            if body.get("model", served_model) != served_model:
                return error(404, f"model {body.get('model')!r} not found; this server has {served_model!r}",
                             "not_found_error")
            prompt_ids = parse_prompt(body.get("prompt"), tokenizer)
            max_tokens, ignore_eos = parse_limits(body)
        except (BadRequest, json.JSONDecodeError) as exc:
            return error(400, str(exc))
        stream = CompletionStream(tokenizer, asyncio.get_running_loop())
        job = GenJob(prompt_ids, max_tokens, ignore_eos, stream.emit)
        runner.submit(job)
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": served_model}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_sse(stream, job, meta, include_usage, eos_ids),
                                     media_type="text/event-stream")
        try:
            text = "".join([delta async for delta in stream.deltas()])
        finally:
            job.cancelled.set()
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason(job, stream.ids, eos_ids)}
        return {**meta, "choices": [choice], "usage": usage(job, stream.ids)}

    return app


def finish_reason(job: GenJob, ids: list[int], eos_ids: set[int]) -> str:
    stopped = not job.ignore_eos and bool(ids) and ids[-1] in eos_ids
    return "stop" if stopped or len(ids) < job.max_tokens else "length"


def usage(job: GenJob, ids: list[int]) -> dict:
    return {"prompt_tokens": len(job.prompt_ids), "completion_tokens": len(ids),
            "total_tokens": len(job.prompt_ids) + len(ids)}


async def _sse(stream: CompletionStream, job: GenJob, meta: dict, include_usage: bool,
               eos_ids: set[int]) -> AsyncIterator[str]:
    def chunk(choices: list[dict], **extra) -> str:
        return f"data: {json.dumps({**meta, 'choices': choices, **extra}, separators=(',', ':'))}\n\n"

    try:
        async for delta in stream.deltas():
            yield chunk([{"index": 0, "text": delta, "logprobs": None, "finish_reason": None}])
        yield chunk([{"index": 0, "text": "", "logprobs": None,
                      "finish_reason": finish_reason(job, stream.ids, eos_ids)}])
        if include_usage:
            yield chunk([], usage=usage(job, stream.ids))
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()  # a client that went away stops its naive generate at the next token


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="a Hugging Face model folder")
    parser.add_argument("--served-model-name", default=None, help="the `model` clients send (default: folder name)")
    parser.add_argument("--mode", choices=("naive", "static"), default="naive")
    parser.add_argument("--max-batch-size", type=int, default=8, help="static mode: rows per generate()")
    parser.add_argument("--max-wait-ms", type=float, default=50.0, help="static mode: how long a batch waits to fill")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    import uvicorn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
        else tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    if args.mode == "naive":
        runner: _Runner = NaiveRunner(model, eos_ids, pad_id)
    else:
        runner = StaticRunner(model, eos_ids, pad_id, args.max_batch_size, args.max_wait_ms / 1000)
    served = args.served_model_name or args.model_dir.rstrip("/").rsplit("/", 1)[-1]
    uvicorn.run(build_app(model, tokenizer, runner, served), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
