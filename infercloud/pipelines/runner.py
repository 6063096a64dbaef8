"""PipelineRun: one request through a pipeline's stages, each bounded by what remains of one deadline.

Algorithm:
  deadline = arrival + slo_s. Each stage runs with timeout = min(its budget_s, deadline - now); one that
  runs out is skipped (on_budget: skip; the pipeline goes on with what it has) or fails the request (504,
  on_budget: fail); a stage whose call fails (a missing collection: 404) fails the request with that error.
  A stage is not even started when it is expected to run out: when its recent duration (LatencyBook: an
  average of its last runs; a streamed generate's time to first token) is more than its timeout. Under
  overload that sheds the requests that would miss anyway before they take the engine's time from those
  that can still make it; each stage refused this way lowers the estimate a little, so one is let through
  now and then to measure again.
  embed     the question (the last user message) -> one unit vector
  retrieve  the caller's collection, by that vector -> top_k passages (best chunk per document)
  rerank    cross-encoder where installed, else the chat model's P(Yes) that a passage helps answer the
            question (logprobs of a one-token reply, one request per passage, batched by the engine), else
            cosine similarity of freshly embedded passages; keeps top_k
  generate  the chat model on [system: template with the passages] + the conversation, entering the engine
            with a first-token deadline: what remains, less the budgets of the stages after it and its
            expected decode time (max_tokens x the model's TPOT target, where it has one), so the engine
            serves a request late in its pipeline before a fresh one with slack (deadline_ordering)
  check     json_schema | regex | groundedness (checks.py) on the answer; a failed check is reported, the
            answer is still returned
Every call is made with the client's own request (key, limits) under the pipeline's request id, with the
stage's name, so the ledger books each stage's usage; the client is told the same usage, stage by stage.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from starlette.responses import Response

from infercloud.collections.embed import CallContext, Embed
from infercloud.openai.errors import APIError
from infercloud.pipelines.answers import chat_answer, chat_stream_error, prepend, sse_chunks
from infercloud.pipelines.checks import CheckResult, check_groundedness, check_json_schema, check_regex, sentences
from infercloud.pipelines.latency import LatencyBook, expected_to_miss
from infercloud.pipelines.spec import PipelineSpec, StageSpec
from infercloud.pipelines.trace import Passage, StageFailed, StageTrace, deadline_exceeded

Chat = Callable[[CallContext, dict, "float | None"], Awaitable[Response]]   # (ctx, body, first-token deadline_s)
Retrieve = Callable[[CallContext, str, np.ndarray, int, "dict | None"], Awaitable[list[Passage]]]


@dataclass
class Calls:
    """What a run calls: the server's own embeddings and chat handling, a collection search, the models'
    TPOT targets (None where a model has none) and whether a cross-encoder is installed (none is yet)."""

    embed: Embed
    chat: Chat
    retrieve: Retrieve
    tpot_of: Callable[[str], "float | None"] = lambda model: None
    clock: Callable[[], float] = time.monotonic
    latencies: LatencyBook = field(default_factory=LatencyBook)


def _keep_policy(trace: StageTrace, answer: dict) -> None:
    """A stage's chat answer (or a stream's chunk) may carry the policy decisions the gateway made about that
    call (`infercloud.policy`): they go into the stage's trace."""
    extra = answer.get("infercloud")
    decisions = extra.get("policy") if isinstance(extra, dict) else None
    if decisions:
        trace.detail.setdefault("policy", []).extend(decisions)


def _usage(model: str, usage: dict | None) -> dict:
    usage = usage or {}
    return {"model": model, "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0)}


def _p_yes(choice: dict) -> float | None:
    """P(Yes) against P(No) from the first token's top logprobs; None when neither is among them."""
    tops = ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") or []
    yes = sum(math.exp(t["logprob"]) for t in tops if t["token"].strip().lower() == "yes")
    no = sum(math.exp(t["logprob"]) for t in tops if t["token"].strip().lower() == "no")
    return yes / (yes + no) if yes + no > 0 else None


@dataclass
class PipelineRun:
    spec: PipelineSpec
    calls: Calls
    ctx: CallContext
    messages: list[dict]                # the conversation; the last one is the user's question
    started: float
    question: str = ""
    vector: np.ndarray | None = None
    passages: list[Passage] = field(default_factory=list)
    answer: str = ""
    trace: list[StageTrace] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.question = str(self.messages[-1].get("content") or "")

    @property
    def remaining_s(self) -> float:
        return self.started + self.spec.slo_s - self.calls.clock()

    def _ctx(self, stage: StageSpec) -> CallContext:
        return CallContext(self.ctx.request, self.ctx.request_id, self._key(stage))

    def _key(self, stage: StageSpec) -> str:
        return f"{self.spec.name}/{stage.name}"

    def _out_of_time(self, stage: StageSpec, trace: StageTrace, expected_s: float | None) -> None:
        """The stage ran out of time (or was expected to): skipped, or StageFailed as it is configured."""
        trace.status = "skipped" if stage.on_budget == "skip" else "failed"
        trace.detail["reason"] = "out of time" if expected_s is None else \
            f"expected to take {expected_s:.3f} s, more than the {trace.timeout_s:.3f} s it has"
        if trace.status == "failed":
            raise StageFailed(deadline_exceeded(stage, trace.timeout_s))

    async def _run(self, stage: StageSpec, work: Callable[[StageSpec, StageTrace], Awaitable[None]]) -> None:
        trace = StageTrace(stage.name, stage.kind)
        self.trace.append(trace)
        trace.timeout_s = max(0.0, min(stage.budget_s or math.inf, self.remaining_s))
        start = self.calls.clock()
        expected = expected_to_miss(self.calls.latencies, self._key(stage), trace.timeout_s)
        try:
            if trace.timeout_s <= 0 or expected is not None:
                raise asyncio.TimeoutError
            await asyncio.wait_for(work(stage, trace), trace.timeout_s)
            self.calls.latencies.observe(self._key(stage), self.calls.clock() - start)
        except asyncio.TimeoutError:
            self._out_of_time(stage, trace, expected)
        except APIError as exc:
            trace.status = "failed"
            trace.detail["reason"] = exc.message
            raise StageFailed(APIError(exc.status, f"Pipeline stage '{stage.name}': {exc.message}", type=exc.type,
                                       param=exc.param, code=exc.code)) from None
        finally:
            trace.elapsed_s = self.calls.clock() - start

    # -- the stages before and after generate --------------------------------------------------------------
    async def before_generate(self) -> None:
        for stage in self.spec.stages:
            if stage.kind == "generate":
                return
            await self._run(stage, getattr(self, f"_{stage.kind}"))

    async def after_generate(self) -> None:
        for stage in self.spec.stages[self.spec.kinds.index("generate") + 1:]:
            await self._run(stage, self._check)

    async def _embed(self, stage: StageSpec, trace: StageTrace) -> None:
        embedded = await self.calls.embed(self._ctx(stage), stage.model, [self.question])
        self.vector = embedded.vectors[0]
        trace.usage = _usage(stage.model, {"prompt_tokens": embedded.prompt_tokens})

    async def _retrieve(self, stage: StageSpec, trace: StageTrace) -> None:
        self.passages = await self.calls.retrieve(self._ctx(stage), stage.collection, self.vector, stage.top_k,
                                                  stage.filter)
        trace.detail["passages"] = [p.document_id for p in self.passages]

    async def _rerank(self, stage: StageSpec, trace: StageTrace) -> None:
        method = "llm" if stage.method in ("auto", "cross_encoder") else stage.method   # no cross-encoder yet
        trace.detail["method"] = method
        if stage.method == "cross_encoder":
            trace.detail["note"] = "no cross-encoder model is installed: scored by the chat model instead"
        if method == "llm":
            scores = await asyncio.gather(*(self._relevance(stage, trace, p) for p in self.passages))
        else:
            embedded = await self.calls.embed(self._ctx(stage), self.spec.stage("embed").model,
                                              [p.text for p in self.passages])
            trace.usage = _usage(self.spec.stage("embed").model, {"prompt_tokens": embedded.prompt_tokens})
            scores = list(embedded.vectors @ self.vector) if self.passages else []
        order = sorted(range(len(self.passages)), key=lambda i: (-(scores[i] if scores[i] is not None else -1),
                                                                -self.passages[i].score))
        self.passages = [self.passages[i] for i in order[:stage.top_k]]
        trace.detail["passages"] = [p.document_id for p in self.passages]
        trace.detail["scores"] = [None if scores[i] is None else round(float(scores[i]), 4) for i in order[:stage.top_k]]

    async def _relevance(self, stage: StageSpec, trace: StageTrace, passage: Passage) -> float | None:
        body = {"model": stage.model, "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20,
                "messages": [{"role": "user", "content": f"Passage: {passage.text}\n\nQuestion: {self.question}\n\n"
                              "Does the passage help answer the question? Answer Yes or No."}]}
        answer = chat_answer(await self.calls.chat(self._ctx(stage), body, None))
        _keep_policy(trace, answer)
        used = _usage(stage.model, answer.get("usage"))
        if trace.usage is None:
            trace.usage = used
        else:
            trace.usage["prompt_tokens"] += used["prompt_tokens"]
            trace.usage["completion_tokens"] += used["completion_tokens"]
        return _p_yes(answer["choices"][0])

    async def _check(self, stage: StageSpec, trace: StageTrace) -> None:
        if stage.rule == "json_schema":
            result = check_json_schema(self.answer, stage.schema)
        elif stage.rule == "regex":
            result = check_regex(self.answer, stage.pattern)
        else:
            parts = sentences(self.answer)
            texts = parts + [p.text for p in self.passages]
            embedded = await self.calls.embed(self._ctx(stage), stage.model, texts) if parts else None
            vectors = embedded.vectors if embedded is not None else np.zeros((0, 0), np.float32)
            result = check_groundedness(parts, vectors[:len(parts)], vectors[len(parts):], stage.threshold)
            if embedded is not None:
                trace.usage = _usage(stage.model, {"prompt_tokens": embedded.prompt_tokens})
        self.checks.append(result)
        trace.detail["check"] = result.as_dict()

    # -- generate ---------------------------------------------------------------------------------------------
    def generate_body(self, stage: StageSpec, client: dict, stream: bool) -> dict:
        """The chat request of the generate stage: the template with the passages as the system message, then
        the conversation; the client's sampling fields where it gave them."""
        passages = "\n\n".join(f"[{i + 1}] {p.text}" for i, p in enumerate(self.passages)) or "(no passages)"
        body = {k: v for k, v in client.items() if k in _CLIENT_SAMPLING and v is not None}
        body.update({"model": stage.model, "stream": stream,
                     "messages": [{"role": "system", "content": stage.template.replace("{passages}", passages)},
                                  *self.messages]})
        body.setdefault("max_tokens", stage.max_tokens)
        if stage.temperature is not None:
            body.setdefault("temperature", stage.temperature)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def first_token_deadline(self, stage: StageSpec, max_tokens: int) -> float | None:
        """When the generate stage's first token is due, from now (None: deadline ordering is off)."""
        if not self.spec.deadline_ordering:
            return None
        later = self.spec.stages[self.spec.kinds.index("generate") + 1:]
        reserve = sum(s.budget_s or 0.0 for s in later) + max_tokens * (self.calls.tpot_of(stage.model) or 0.0)
        return max(self.remaining_s - reserve, 0.001)

    async def generate(self, client: dict) -> dict:
        """The generate stage, not streamed: the chat completion as the model answered it."""
        stage = self.spec.stage("generate")
        answer: dict = {}

        async def work(stage: StageSpec, trace: StageTrace) -> None:
            body = self.generate_body(stage, client, stream=False)
            response = await self.calls.chat(self._ctx(stage), body, self.first_token_deadline(stage, body["max_tokens"]))
            answer.update(chat_answer(response))
            _keep_policy(trace, answer)
            answer.pop("infercloud", None)     # the pipeline's own report replaces it
            self.answer = answer["choices"][0]["message"].get("content") or ""
            trace.usage = _usage(stage.model, answer.get("usage"))

        await self._run(stage, work)
        return answer

    async def generate_stream(self, client: dict) -> AsyncIterator[dict]:
        """The generate stage, streamed: its chunks as the model sends them (the first within the stage's time,
        the rest as they come), its usage chunk kept back for the pipeline's own."""
        stage = self.spec.stage("generate")
        trace = StageTrace(stage.name, stage.kind)
        self.trace.append(trace)
        trace.timeout_s = max(0.0, min(stage.budget_s or math.inf, self.remaining_s))
        start = self.calls.clock()
        body = self.generate_body(stage, client, stream=True)
        chunks = None
        key = self._key(stage) + "#first-token"
        try:
            expected = expected_to_miss(self.calls.latencies, key, trace.timeout_s)
            if expected is not None:
                self._out_of_time(stage, trace, expected)
            try:
                response = await asyncio.wait_for(
                    self.calls.chat(self._ctx(stage), body, self.first_token_deadline(stage, body["max_tokens"])),
                    max(trace.timeout_s, 1e-6))
                if response.status_code != 200:
                    raise chat_stream_error(response)
                chunks = sse_chunks(response)
                first = await asyncio.wait_for(chunks.__anext__(), max(self.remaining_s, 1e-6))
                self.calls.latencies.observe(key, self.calls.clock() - start)
            except asyncio.TimeoutError:
                trace.status, trace.detail["reason"] = "failed", "out of time before its first token"
                raise StageFailed(deadline_exceeded(stage, trace.timeout_s)) from None
            except APIError as exc:
                trace.status, trace.detail["reason"] = "failed", exc.message
                raise StageFailed(exc) from None
            async for chunk in prepend(first, chunks):
                if not chunk.get("choices") and (chunk.get("usage") or chunk.get("infercloud")):
                    if chunk.get("usage"):
                        trace.usage = _usage(stage.model, chunk["usage"])
                    _keep_policy(trace, chunk)      # the pipeline's last chunk reports it
                    continue
                for choice in chunk.get("choices") or []:
                    self.answer += (choice.get("delta") or {}).get("content") or ""
                yield chunk
        finally:
            trace.elapsed_s = self.calls.clock() - start
            if chunks is not None:
                await chunks.aclose()

    # -- what the client is told -----------------------------------------------------------------------------
    def usage(self) -> dict:
        stages = {t.name: t.usage for t in self.trace if t.usage}
        prompt = sum(u["prompt_tokens"] for u in stages.values())
        completion = sum(u["completion_tokens"] for u in stages.values())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "stages": stages}

    def report(self) -> dict:
        """The `infercloud` field of the answer: the pipeline, its sources, every stage's trace, the checks, and the
        policy decisions the gateway made about the stages' calls (also in each stage's trace), as a plain chat
        answer lists its own."""
        policy = [{"stage": t.name, **d} for t in self.trace for d in t.detail.get("policy", ())]
        return {"pipeline": self.spec.name, "request_id": self.ctx.request_id,
                "sources": [p.as_source() for p in self.passages], "stages": [t.as_dict() for t in self.trace],
                "checks": [c.as_dict() for c in self.checks], "elapsed_s": round(self.calls.clock() - self.started, 4),
                **({"policy": policy} if policy else {})}

    def server_timing(self) -> str:
        """The stages' times as a Server-Timing header (milliseconds)."""
        return ", ".join(f'{t.name};dur={t.elapsed_s * 1000:.1f};desc="{t.status}"' for t in self.trace)


_CLIENT_SAMPLING = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop", "presence_penalty",
                    "frequency_penalty", "response_format", "user", "top_k", "min_p", "repetition_penalty")


