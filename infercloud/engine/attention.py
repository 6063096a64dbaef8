"""Paged attention: write new K/V into cache blocks, attend over them.

A step's tokens come as one flat batch: first every decode token (one per sequence), then each prefill
chunk. Two ways to attend, chosen once per engine (runner.py):
  - the compiled CPU kernel (csrc/paged_attention.cpp, kernels.py): one call per layer for every row of
    the step, reading the cache in place; keys are cached transposed in d-pairs within a block, [num_blocks,
    num_kv_heads, head_dim / 2, block_size, 2], values in key pairs, [num_blocks, block_size / 2, num_kv_heads,
    head_dim, 2]: the operands of AVX512_BF16 dot products. Each
    row's result is bitwise independent of the batch and of how its prompt was chunked.
  - SDPA on gathered copies (CUDA, or where the kernel cannot be built), both caches [num_blocks,
    block_size, num_kv_heads, head_dim], planned by `SdpaPlan`:
  - decodes: all sequences at once. Their blocks are gathered by block table into
    [num_decodes, max_blocks * block_size, kv_heads, head_dim] and masked past each context length.
  - prefill chunks: one sequence at a time; a chunk sees its cached context plus itself, causally
    (a chunk with no context is plain causal attention, which the kernel runs without a mask).
GQA without copies: the G query heads that share one KV head are folded into the query-length axis,
so q is [batch, kv_heads, G * q_len, head_dim] against k/v [batch, kv_heads, ctx, head_dim].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PrefillChunk:
    token_start: int        # first row of this chunk in the flat batch
    num_tokens: int         # rows in this chunk
    context_len: int        # tokens already in the cache before this chunk (prefix hit or earlier chunks)
    block_ids: torch.Tensor  # blocks covering context_len + num_tokens
    mask: torch.Tensor | None  # [num_tokens, context_len + num_tokens] bool; None when context_len == 0


@dataclass
class SdpaPlan:
    """The gathered copies and masks of the SDPA path."""
    num_decodes: int
    decode_block_tables: torch.Tensor | None  # [num_decodes, max_blocks]
    decode_mask: torch.Tensor | None          # [num_decodes, 1, 1, max_blocks * block_size] bool
    prefills: list[PrefillChunk]


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor     # [num_tokens] flat cache slot of each new token
    kernel: Callable | None        # the compiled paged attention op, or None: SDPA as `sdpa` plans it
    block_tables: torch.Tensor | None = None  # kernel: [num_seqs, max_blocks], sequences in flat-batch order
    query_start: torch.Tensor | None = None   # kernel: [num_seqs + 1] first row of each sequence
    seq_lens: torch.Tensor | None = None      # kernel: [num_seqs] keys of each sequence after this step
    sdpa: SdpaPlan | None = None


def causal_chunk_mask(context_len: int, num_tokens: int, device: torch.device) -> torch.Tensor:
    """Row i (absolute position context_len + i) may attend to keys 0..context_len + i."""
    keys = torch.arange(context_len + num_tokens, device=device)
    rows = torch.arange(num_tokens, device=device) + context_len
    return keys[None, :] <= rows[:, None]


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                    scale: float) -> torch.Tensor:
    """q [T, H, D], k/v [T, Hkv, D]; returns [T, H, D]. Writes k/v into the cache at meta.slot_mapping."""
    if meta.kernel is not None:
        return meta.kernel(q.contiguous(), k.contiguous(), v.contiguous(), k_cache, v_cache, meta.slot_mapping,
                           meta.block_tables, meta.query_start, meta.seq_lens, scale)
    return _sdpa_attention(q, k, v, k_cache, v_cache, meta.slot_mapping, meta.sdpa, scale)


def _sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, slot_mapping: torch.Tensor, plan: SdpaPlan, scale: float) -> torch.Tensor:
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    group = num_heads // num_kv_heads
    flat_k = k_cache.view(-1, num_kv_heads, head_dim)
    flat_v = v_cache.view(-1, num_kv_heads, head_dim)
    flat_k.index_copy_(0, slot_mapping, k)
    flat_v.index_copy_(0, slot_mapping, v)
    out = torch.empty_like(q)

    nd = plan.num_decodes
    if nd:
        tables = plan.decode_block_tables
        ctx_len = tables.shape[1] * k_cache.shape[1]
        # index_select copies whole blocks at memcpy speed (advanced indexing is ~1.5x slower here)
        kk = k_cache.index_select(0, tables.flatten()).view(nd, ctx_len, num_kv_heads, head_dim).transpose(1, 2)
        vv = v_cache.index_select(0, tables.flatten()).view(nd, ctx_len, num_kv_heads, head_dim).transpose(1, 2)
        qq = q[:nd].view(nd, num_kv_heads, group, head_dim)
        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=plan.decode_mask, scale=scale)
        out[:nd] = o.reshape(nd, num_heads, head_dim)

    for chunk in plan.prefills:
        rows = slice(chunk.token_start, chunk.token_start + chunk.num_tokens)
        if chunk.context_len == 0:
            # a fresh prompt: plain causal attention, K/V expanded to every query head. Inputs must be 4-D
            # and GQA explicit, or SDPA falls back to its math path (9x slower at 1024 tokens on CPU).
            kk = k[rows].transpose(0, 1).repeat_interleave(group, dim=0)[None]
            vv = v[rows].transpose(0, 1).repeat_interleave(group, dim=0)[None]
            o = F.scaled_dot_product_attention(q[rows].transpose(0, 1)[None], kk, vv, is_causal=True, scale=scale)
            out[rows] = o[0].transpose(0, 1)
        else:
            out[rows] = _chunk_over_context(q[rows], k_cache, v_cache, chunk, scale)
    return out


def _chunk_over_context(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, chunk: PrefillChunk,
                        scale: float) -> torch.Tensor:
    """A prefill chunk after cached tokens: attends to context + itself under the chunk's offset causal mask."""
    n, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    total = chunk.context_len + n
    kk = k_cache.index_select(0, chunk.block_ids).flatten(0, 1)[:total].transpose(0, 1)  # [Hkv, total, D]
    vv = v_cache.index_select(0, chunk.block_ids).flatten(0, 1)[:total].transpose(0, 1)
    # [n, H, D] -> [Hkv, G * n, D] (query heads of a group stacked along the length axis)
    qq = q.view(n, num_kv_heads, group, head_dim).permute(1, 2, 0, 3).reshape(num_kv_heads, group * n, head_dim)
    o = F.scaled_dot_product_attention(qq[None], kk[None], vv[None], attn_mask=chunk.mask.repeat(group, 1),
                                       scale=scale)[0]  # 4-D, or SDPA takes its slow math path
    return o.view(num_kv_heads, group, n, head_dim).permute(2, 0, 1, 3).reshape(n, num_heads, head_dim)
