"""The HF transformers peer: one request at a time through `generate()`, greedy, fp32, same prompts.

This is the "naive" peer of docs/benchmarks.md without its HTTP wrapper (offline, same process). Every
request is forced to exactly `max_tokens` new tokens (min_new_tokens = max_new_tokens), like the
engine's ignore_eos. Batch-1 decode speed is (time of an N-token generate - time of a 1-token
generate) / (N - 1): the difference removes the prefill and the per-call overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from infercloud.bench.workloads import BenchRequest


@dataclass
class HFSequentialResult:
    wall_s: float
    output_tokens: int
    request_e2e_s: list[float]

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / self.wall_s

    def to_json(self) -> dict:
        return {"wall_s": self.wall_s, "output_tokens": self.output_tokens,
                "output_throughput_tok_s": self.output_throughput, "request_e2e_s": self.request_e2e_s}


def load_hf_model(model_dir: str | Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@torch.inference_mode()
def hf_generate(model, prompt_token_ids: Sequence[int], num_new_tokens: int) -> list[int]:
    """Greedy generate of exactly `num_new_tokens` tokens; returns them."""
    ids = torch.tensor([list(prompt_token_ids)])
    pad = model.generation_config.pad_token_id
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=num_new_tokens, min_new_tokens=num_new_tokens,
                         pad_token_id=pad if pad is not None else 0)
    return out[0, ids.shape[1]:].tolist()


def run_hf_sequential(model, requests: Sequence[BenchRequest],
                      clock: Callable[[], float] = time.perf_counter) -> HFSequentialResult:
    """Run the requests one after another; output tokens counted from what generate returned."""
    e2e, num_tokens = [], 0
    start = clock()
    for req in requests:
        sent = clock()
        num_tokens += len(hf_generate(model, req.prompt_token_ids, req.max_tokens))
        e2e.append(clock() - sent)
    return HFSequentialResult(clock() - start, num_tokens, e2e)


def hf_batch1_decode_tpot(model, prompt_token_ids: Sequence[int], num_new_tokens: int,
                          clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per decode step at batch 1: (t(N tokens) - t(1 token)) / (N - 1)."""
    sent = clock()
    hf_generate(model, prompt_token_ids, 1)
    one_s = clock() - sent
    sent = clock()
    hf_generate(model, prompt_token_ids, num_new_tokens)
    many_s = clock() - sent
    tpot = (many_s - one_s) / (num_new_tokens - 1)
    return {"generate_1_s": one_s, f"generate_{num_new_tokens}_s": many_s, "tpot_s": tpot,
            "decode_tok_s": 1.0 / tpot}
