"""LLMEngine: one model on one device; add_request / step / abort, the synchronous core of serving.

step() is: schedule -> run the batch -> advance progress -> sample -> append, detokenize, check stops
-> report what changed. Everything about time goes through the injected clock.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from infercloud.engine.arch.llama import LlamaArchConfig, LlamaForCausalLM
from infercloud.engine.config import EngineConfig, cpu_has_bf16
from infercloud.engine.detokenizer import IncrementalDetokenizer
from infercloud.engine.kernels import cpu_ops
from infercloud.engine.kv.kv_cache_manager import KVCacheManager
from infercloud.engine.outputs import CompletionOutput, RequestOutput
from infercloud.engine.request import FinishReason, Request
from infercloud.engine.runner import ModelRunner
from infercloud.engine.sampler import advance_generator, sample
from infercloud.engine.sampling import InvalidParamError, SamplingParams
from infercloud.engine.scheduler import Scheduler, SchedulerOutput
from infercloud.engine.structured.grammars import Grammars
from infercloud.engine.tokenizer import Tokenizer
from infercloud.models.local import LocalModel


log = logging.getLogger("infercloud.engine")


def _dtype_reason(config: EngineConfig, device: torch.device) -> str:
    if config.dtype != "auto":
        return "dtype set in the config"
    if device.type == "cuda":
        return "auto: bf16 on CUDA"
    return "auto: this CPU has native bf16" if cpu_has_bf16() else "auto: no native bf16 on this CPU"


class ContextLengthError(InvalidParamError):
    """Prompt plus max_tokens does not fit the model's context window."""


@dataclass
class EngineStats:
    num_running: int
    num_waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    prefix_cache_hit_rate: float
    prefix_cache_queried_tokens: int
    prefix_cache_hit_tokens: int
    num_preemptions: int
    last_step_s: float
    num_steps: int
    num_generated_tokens: int
    num_prompt_tokens_computed: int


class LLMEngine:
    def __init__(self, model_dir: str | Path, config: EngineConfig | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config = config or EngineConfig()
        self.clock = clock
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = config.torch_device()
        self.dtype = config.torch_dtype(self.device)
        local = LocalModel.open(model_dir)
        self.model_dir = local.path
        self.tokenizer = Tokenizer(local)
        arch = LlamaArchConfig.from_hf(local.hf_config)
        limits = [arch.max_position_embeddings, config.max_model_len, arch.sliding_window]
        self.max_model_len = min(n for n in limits if n)
        with torch.device("meta"):
            model = LlamaForCausalLM(arch, self.max_model_len)
        model = model.to_empty(device=self.device)
        model.load_weights(local.path, self.device, self.dtype)
        model.init_rope(self.device, self.dtype)
        model.prepare_linears(config.quantization, self.device, self.dtype)
        model.fused = cpu_ops(self.device)
        self.model = model.eval()
        log.info("engine: %s on %s in %s%s (%s)", local.path.name, self.device, str(self.dtype).removeprefix("torch."),
                 f", {config.quantization} weights" if config.quantization else "", _dtype_reason(config, self.device))
        num_blocks = config.num_kv_blocks or max(1, int(config.kv_cache_memory_gb * 2**30
                                                        // ModelRunner.kv_bytes_per_block(arch, config.block_size, self.dtype)))
        self.kv = KVCacheManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.kv, config.max_num_seqs, config.max_num_batched_tokens, clock)
        self.runner = ModelRunner(self.model, num_blocks, config.block_size, self.device, self.dtype,
                                  config.attention)
        self.grammars = Grammars(self.tokenizer, arch.vocab_size, config.max_num_seqs)
        self._rng = random.Random(config.seed)
        self._children: dict[str, list[Request]] = {}
        self._detok: dict[str, IncrementalDetokenizer] = {}
        self._pending: list[RequestOutput] = []
        self._last_step_s = 0.0
        self._num_steps = 0
        self._num_generated = 0
        self._num_prompt_computed = 0

    # -- requests ----------------------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: str | Sequence[int], params: SamplingParams | None = None,
                    *, priority: int = 0, cache_salt: str | None = None, deadline_s: float | None = None,
                    arrival_time: float | None = None, resume_token_ids: Sequence[int] = ()) -> list[int]:
        """Queue a request (n sequences). Returns its prompt token ids; raises InvalidParamError if it cannot run.

        `resume_token_ids` are tokens this request already generated elsewhere (a replica that died
        mid-stream): they become its first output tokens, counted against max_tokens and by the
        penalties, with the seeded generator and the detokenizer advanced past them, so the tokens and
        text that follow are those the first engine would have produced. Only with n == 1.
        `deadline_s`: its first token is due this long after arrival (the scheduler serves the earliest due
        first within a priority class); None: by arrival.
        """
        params = params or SamplingParams()
        child_ids = [f"{request_id}#{i}" for i in range(params.n)] if params.n > 1 else [request_id]
        if request_id in self._children or any(c in self._detok for c in child_ids + [request_id]):
            raise ValueError(f"request id {request_id!r} is already in use")
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        self._validate(ids, params)
        resume = list(resume_token_ids)
        if resume:
            self._validate_resume(resume, params)
        arrival = self.clock() if arrival_time is None else arrival_time
        children = []
        for i in range(params.n):
            seed = params.seed + i if params.seed is not None else self._rng.getrandbits(62)
            gen = torch.Generator(device=self.device).manual_seed(seed)
            req = Request(child_ids[i], ids, params, gen,
                          parent_id=request_id, index=i, priority=priority, cache_salt=cache_salt,
                          arrival_time=arrival, due_time=None if deadline_s is None else arrival + deadline_s)
            if params.structured is not None:
                req.grammar = self.grammars.matcher(params.structured)
            if resume:
                self._resume(req, resume)
            self._detok[req.request_id] = detok = IncrementalDetokenizer(self.tokenizer.hf, params, ids)
            for token_id in resume:
                detok.append(token_id)
            detok.skip_emitted()
            children.append(req)
        for req in children:
            self.scheduler.add(req)
        self._children[request_id] = children
        return ids

    def _validate(self, ids: list[int], params: SamplingParams) -> None:
        if not ids:
            raise InvalidParamError("prompt", "the prompt is empty")
        vocab = self.model.cfg.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise InvalidParamError("prompt", f"prompt token ids must be in [0, {vocab})")
        for param, token_ids in (("logit_bias", params.logit_bias or ()), ("stop_token_ids", params.stop_token_ids)):
            if any(not 0 <= t < vocab for t in token_ids):
                raise InvalidParamError(param, f"{param} token ids must be in [0, {vocab})")
        total = len(ids) + params.max_tokens
        if total > self.max_model_len:
            raise ContextLengthError(
                "max_tokens", f"this model's maximum context length is {self.max_model_len} tokens, but the "
                f"request asks for {total} ({len(ids)} in the prompt + {params.max_tokens} max_tokens)")
        blocks = -(-total // self.config.block_size)
        if blocks > self.kv.pool.num_blocks:
            raise ContextLengthError(
                "max_tokens", f"the request needs {total} tokens of KV cache, but this engine holds only "
                f"{self.kv.pool.num_blocks * self.config.block_size}")

    def _validate_resume(self, resume: list[int], params: SamplingParams) -> None:
        if params.n != 1:
            raise InvalidParamError("resume_token_ids", "resume_token_ids needs n == 1")
        if len(resume) >= params.max_tokens:
            raise InvalidParamError("resume_token_ids", f"{len(resume)} resumed tokens leave nothing to generate "
                                    f"under max_tokens={params.max_tokens}")
        if min(resume) < 0 or max(resume) >= self.model.cfg.vocab_size:
            raise InvalidParamError("resume_token_ids", f"token ids must be in [0, {self.model.cfg.vocab_size})")

    def _resume(self, req: Request, resume: list[int]) -> None:
        """Make `resume` the request's first outputs, as if this engine had sampled them (its grammar, if
        any, replays them: a migrated structured stream goes on from the same grammar state)."""
        for token_id in resume:
            if req.grammar is not None and not req.grammar.accept_token(token_id):
                raise InvalidParamError("resume_token_ids", "the resumed tokens do not match the request's "
                                        f"{req.params.structured.kind.replace('_', ' ')}")
            req.append_token(token_id)
        if not req.params.is_greedy:  # one exponential draw per sampled token (sampler.py)
            advance_generator(req.generator, len(resume), self.model.cfg.vocab_size, self.device)

    def abort_request(self, request_id: str) -> bool:
        """Abort every sequence of a request; its final output comes with the next step(). False if unknown."""
        children = self._children.get(request_id)
        if children is None:
            return False
        for req in children:
            self.scheduler.finish(req, FinishReason.ABORT)
        self._pending.append(self._output(request_id, children))
        self._forget(request_id)
        return True

    def has_unfinished_requests(self) -> bool:
        return bool(self._children) or bool(self._pending)

    # -- the step loop -----------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        outputs, self._pending = self._pending, []
        sched = self.scheduler.schedule()
        if sched.is_empty:
            return outputs
        start = self.clock()
        logits, sampled = self.runner.execute(sched)
        self.scheduler.update_after_step(sched)
        results = sample(logits, sampled, self.tokenizer.eos_token_ids, self.grammars)
        now = self.clock()
        self._account(sched, start, now)
        changed: dict[str, None] = {}
        for req, (token_id, logprob) in zip(sampled, results):
            self._append(req, token_id, logprob, now)
            changed[req.parent_id] = None
        for parent_id in changed:
            children = self._children[parent_id]
            outputs.append(self._output(parent_id, children, only=[r for r in sampled if r.parent_id == parent_id]))
            if all(r.is_finished for r in children):
                self._forget(parent_id)
        return outputs

    def _append(self, req: Request, token_id: int, logprob, now: float) -> None:
        req.append_token(token_id)
        if logprob is not None:
            req.logprobs.append(logprob)
        m = req.metrics
        if m.first_token_time is None:
            m.first_token_time = now
        else:
            m.token_gaps.append(now - m.last_token_time)
        m.last_token_time = now
        self._num_generated += 1
        detok_start = self.clock()
        stop_string = self._detok[req.request_id].append(token_id)
        m.detokenize_s += self.clock() - detok_start
        reason, stop_reason = self._check_stop(req, token_id)
        if req.grammar is not None and reason is None and (not req.grammar.accept_token(token_id)
                                                           or req.grammar.is_terminated()):
            reason = FinishReason.STOP   # the grammar is complete (or, never expected, refused the token)
        if reason is None and stop_string is not None:
            reason, stop_reason = FinishReason.STOP, stop_string
        if reason is not None:
            self.scheduler.finish(req, reason, stop_reason)

    def _check_stop(self, req: Request, token_id: int) -> tuple[FinishReason | None, int | None]:
        p = req.params
        if req.num_output_tokens >= p.min_tokens:
            if not p.ignore_eos and token_id in self.tokenizer.eos_token_ids:
                return FinishReason.STOP, None
            if token_id in p.stop_token_ids:
                return FinishReason.STOP, token_id
        if req.num_output_tokens >= p.max_tokens or req.num_tokens >= self.max_model_len:
            return FinishReason.LENGTH, None
        return None, None

    def _account(self, sched: SchedulerOutput, start: float, end: float) -> None:
        """Each request's share of the step's time; a prompt chunk (work before its first token here, or
        more than one token: a recompute after a preemption) is also kept with its step's times."""
        step_s, total = end - start, sched.num_batched_tokens
        for s in sched.scheduled:
            m = s.request.metrics
            m.device_seconds += step_s * s.num_new_tokens / total
            if s.num_new_tokens > 1 or m.first_token_time is None:
                self._num_prompt_computed += s.num_new_tokens
                m.prefill_chunks.append((start, end, s.num_new_tokens))
        self._last_step_s = step_s
        self._num_steps += 1

    def _output(self, parent_id: str, children: list[Request], only: list[Request] | None = None) -> RequestOutput:
        outs = []
        for req in only if only is not None else children:
            detok = self._detok[req.request_id]
            num_new = 1 if only is not None else 0
            delta_ids = req.output_token_ids[len(req.output_token_ids) - num_new:]
            outs.append(CompletionOutput(
                index=req.index, text=detok.text, token_ids=list(req.output_token_ids),
                delta_text=detok.take_delta(req.is_finished), delta_token_ids=delta_ids,
                delta_logprobs=req.logprobs[-num_new:] if req.params.logprobs is not None and num_new else None,
                finish_reason=req.finish_reason.value if req.finish_reason else None, stop_reason=req.stop_reason))
        first = children[0]
        return RequestOutput(parent_id, first.prompt_token_ids, outs, all(r.is_finished for r in children),
                             num_cached_tokens=first.num_cached_tokens, metrics=[r.metrics for r in children])

    def _forget(self, parent_id: str) -> None:
        for req in self._children.pop(parent_id, []):
            self._detok.pop(req.request_id, None)

    # -- conveniences ------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str | Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
                 ) -> list[RequestOutput]:
        """Offline batch: run the prompts to completion; one final RequestOutput per prompt, in order."""
        params_list = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        ids = [f"offline-{self._rng.getrandbits(48):x}-{i}" for i in range(len(prompts))]
        for rid, prompt, p in zip(ids, prompts, params_list):
            self.add_request(rid, prompt, p)
        final: dict[str, dict[int, CompletionOutput]] = {rid: {} for rid in ids}
        last: dict[str, RequestOutput] = {}
        while any(rid in self._children for rid in ids):
            for out in self.step():
                last[out.request_id] = out
                for c in out.outputs:
                    final[out.request_id][c.index] = c
        results = []
        for rid in ids:
            out = last[rid]
            out.outputs = [final[rid][i] for i in sorted(final[rid])]
            results.append(out)
        return results

    def stats(self) -> EngineStats:
        s = self.kv.stats
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            kv_blocks_used=self.kv.num_used_blocks, kv_blocks_total=self.kv.pool.num_blocks,
            prefix_cache_hit_rate=s.hit_rate, prefix_cache_queried_tokens=s.queried_tokens,
            prefix_cache_hit_tokens=s.hit_tokens, num_preemptions=self.scheduler.num_preemptions,
            last_step_s=self._last_step_s, num_steps=self._num_steps,
            num_generated_tokens=self._num_generated, num_prompt_tokens_computed=self._num_prompt_computed)
