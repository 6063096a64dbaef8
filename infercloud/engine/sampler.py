"""Sampler: one next token per sequence from a batch of logits, each row under its request's own params.

Order per row: raw logprobs (if asked) -> logit_bias -> the grammar mask (structured/grammars.py, one call
for the batch) -> min_tokens (EOS/stop ids masked) -> repetition, frequency and
presence penalties -> greedy argmax when temperature is 0, else temperature -> top-k -> top-p -> min-p
-> draw. The draw is the exponential race (argmax of p / E, E ~ Exp(1)), with E from the request's own
torch.Generator, so a seeded request gets the same tokens whatever else shares the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from infercloud.engine.request import Request, TokenLogprob

if TYPE_CHECKING:
    from infercloud.engine.structured.grammars import Grammars


def _apply_penalties(logits: torch.Tensor, req: Request) -> None:
    p = req.params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(req.all_token_ids)), dtype=torch.long, device=logits.device)
        vals = logits[seen]
        logits[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if req.output_token_ids and (p.frequency_penalty or p.presence_penalty):
        out = torch.tensor(req.output_token_ids, dtype=torch.long, device=logits.device)
        counts = torch.zeros_like(logits).index_add_(0, out, torch.ones_like(out, dtype=logits.dtype))
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)


def _filter(logits: torch.Tensor, top_k: int | None, top_p: float, min_p: float) -> torch.Tensor:
    """Set logits outside top-k / top-p nucleus / min-p to -inf (one row)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p  # keep tokens until mass reaches top_p
        logits = logits.masked_fill(torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted), float("-inf"))
    if min_p > 0.0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.max(), float("-inf"))
    return logits


def _logprob_entry(raw_logprobs: torch.Tensor, token_id: int, k: int) -> TokenLogprob:
    top = []
    if k:
        vals, ids = torch.topk(raw_logprobs, k)
        top = list(zip(ids.tolist(), vals.tolist()))
    return TokenLogprob(token_id, float(raw_logprobs[token_id]), top)


def advance_generator(generator: torch.Generator, num_draws: int, vocab_size: int, device: torch.device) -> None:
    """Consume the random numbers `num_draws` sampled tokens would have used (to resume a seeded request)."""
    scratch = torch.empty(vocab_size, dtype=torch.float32, device=device)
    for _ in range(num_draws):
        scratch.exponential_(generator=generator)


def _bias_and_mask(logits: torch.Tensor, requests: Sequence[Request], grammars: "Grammars | None") -> torch.Tensor:
    """Apply logit_bias and grammar masks in place; returns the raw logits (a copy when any were changed)."""
    biased = [i for i, r in enumerate(requests) if r.params.logit_bias]
    constrained = grammars is not None and any(r.grammar is not None for r in requests)
    if not biased and not constrained:
        return logits
    raw = logits.clone() if any(r.params.logprobs is not None for r in requests) else logits
    with torch.inference_mode():   # the runner's logits are inference tensors
        for i in biased:
            bias = requests[i].params.logit_bias
            ids = torch.tensor(list(bias), dtype=torch.long, device=logits.device)
            logits[i, ids] += torch.tensor(list(bias.values()), dtype=logits.dtype, device=logits.device)
        if constrained:
            grammars.mask(logits, requests)
    return raw


def sample(logits: torch.Tensor, requests: Sequence[Request], eos_token_ids: Sequence[int],
           grammars: "Grammars | None" = None) -> list[tuple[int, TokenLogprob | None]]:
    """logits [B, V] (float32, one row per request, in order) -> (token id, logprob entry) per row."""
    logits = logits.float()
    raw_logits = _bias_and_mask(logits, requests, grammars)
    results: list[tuple[int, TokenLogprob | None]] = []
    greedy_rows = [i for i, r in enumerate(requests)
                   if r.params.is_greedy and not r.params.has_penalties
                   and r.num_output_tokens >= r.params.min_tokens]
    if len(greedy_rows) == len(requests):   # all greedy (common): no copy of the rows
        greedy_ids = logits.argmax(-1).tolist()
    else:
        greedy_ids = logits[greedy_rows].argmax(-1).tolist() if greedy_rows else []
    greedy = dict(zip(greedy_rows, greedy_ids))
    for i, req in enumerate(requests):
        p = req.params
        raw = logits[i]
        if i in greedy:
            token_id = greedy[i]
        else:
            row = raw.clone()
            if req.num_output_tokens < p.min_tokens:
                banned = list(p.stop_token_ids) + ([] if p.ignore_eos else list(eos_token_ids))
                if banned:
                    row[torch.tensor(banned, dtype=torch.long, device=row.device)] = float("-inf")
            _apply_penalties(row, req)
            if p.is_greedy:
                token_id = int(row.argmax())
            else:
                row = _filter(row / p.temperature, p.top_k, p.top_p, p.min_p)
                noise = torch.empty_like(row).exponential_(generator=req.generator)
                token_id = int((row.softmax(-1) / noise).argmax())
        entry = None
        if p.logprobs is not None:
            entry = _logprob_entry(raw_logits[i].log_softmax(-1), token_id, p.logprobs)
        results.append((token_id, entry))
    return results
