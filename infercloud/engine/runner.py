"""ModelRunner: packs a scheduled step into flat tensors, runs one forward pass, returns logits to sample.

Layout of the flat batch: every single-token request (decodes, and prefills with one token left) first,
then each multi-token prefill chunk. Positions, cache slots and block tables come from the scheduler's
output; logits are computed only for rows that end a request's known tokens (the rest of a prefill
chunk needs no logits, which saves the vocabulary projection on every prompt token).
"""

from __future__ import annotations

import math
import mmap

import torch

from infercloud.engine.arch.llama import LlamaForCausalLM
from infercloud.engine.attention import AttentionMetadata, PrefillChunk, SdpaPlan, causal_chunk_mask
from infercloud.engine.kernels import attention_kernel
from infercloud.engine.request import Request
from infercloud.engine.scheduler import ScheduledRequest, SchedulerOutput


def cache_tensor(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A zeroed KV cache tensor. On a CPU with transparent huge pages, its own fresh anonymous mapping advised
    onto them before the first touch (memory from the allocator may be pages it touched before): a decode reads
    blocks from all over the cache, and with 4 KiB pages every block costs TLB misses (the attention kernel
    reads ~14% faster at batch 64, docs/benchmarks.md). The tensor keeps the mapping alive."""
    if device.type != "cpu" or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.zeros(shape, device=device, dtype=dtype)
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    memory = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)   # zero-filled
    memory.madvise(mmap.MADV_HUGEPAGE)   # advice only: a kernel without THP ignores it
    return torch.frombuffer(memory, dtype=dtype, count=math.prod(shape)).view(shape)


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int,
                 device: torch.device, dtype: torch.dtype, attention: str = "auto"):
        cfg = model.cfg
        self.model = model
        self.block_size = block_size
        self.device = device
        self.kernel = attention_kernel(attention, device, block_size, cfg.head_dim)
        k_shape = v_shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        if self.kernel:   # pairs for bf16 dot products (engine/attention.py)
            k_shape = (num_blocks, cfg.num_kv_heads, cfg.head_dim // 2, block_size, 2)
            v_shape = (num_blocks, block_size // 2, cfg.num_kv_heads, cfg.head_dim, 2)
        self.kv_caches = [(cache_tensor(k_shape, device, dtype), cache_tensor(v_shape, device, dtype))
                          for _ in range(cfg.num_layers)]

    @staticmethod
    def kv_bytes_per_block(model_cfg, block_size: int, dtype: torch.dtype) -> int:
        elem = torch.empty((), dtype=dtype).element_size()
        return 2 * model_cfg.num_layers * block_size * model_cfg.num_kv_heads * model_cfg.head_dim * elem

    def _tensor(self, values, dtype=torch.long) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.device)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> tuple[torch.Tensor, list[Request]]:
        """Run the step; returns logits [num_sampled, vocab] and the requests they belong to, in order."""
        decodes = [s for s in out.scheduled if s.num_new_tokens == 1]
        prefills = [s for s in out.scheduled if s.num_new_tokens > 1]
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []
        sampled: list[Request] = []
        for s in decodes + prefills:
            start = s.request.num_computed_tokens
            pos = range(start, start + s.num_new_tokens)
            input_ids.extend(s.request.all_token_ids[start:start + s.num_new_tokens])
            positions.extend(pos)
            slots.extend(s.block_ids[p // bs] * bs + p % bs for p in pos)
            if s.samples:
                sample_rows.append(len(input_ids) - 1)
                sampled.append(s.request)
        meta = AttentionMetadata(slot_mapping=self._tensor(slots), kernel=self.kernel)
        if self.kernel is not None:
            self._kernel_tables(decodes + prefills, meta)
        else:
            meta.sdpa = SdpaPlan(len(decodes), None, None, self._prefill_chunks(prefills, len(decodes)))
            if decodes:
                meta.sdpa.decode_block_tables, meta.sdpa.decode_mask = self._decode_tables(decodes)
        hidden = self.model(self._tensor(input_ids), self._tensor(positions), self.kv_caches, meta)
        logits = self.model.compute_logits(hidden[self._tensor(sample_rows)])
        return logits, sampled

    @torch.inference_mode()
    def prompt_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits [n, vocab] after every token of one prompt, computed from block 0 of this runner's own cache:
        for a runner that scores text (bench/quality.py), never one whose blocks the KV manager hands out."""
        n, positions = len(token_ids), list(range(len(token_ids)))
        blocks = list(range(-(-n // self.block_size)))
        meta = AttentionMetadata(slot_mapping=self._tensor(positions), kernel=self.kernel)
        if self.kernel is not None:
            meta.block_tables, meta.query_start, meta.seq_lens = (self._tensor([blocks]), self._tensor([0, n]),
                                                                  self._tensor([n]))
        else:
            meta.sdpa = SdpaPlan(0, None, None, [PrefillChunk(0, n, 0, self._tensor(blocks), None)])
        hidden = self.model(self._tensor(token_ids), self._tensor(positions), self.kv_caches, meta)
        return self.model.compute_logits(hidden)

    def _kernel_tables(self, seqs: list[ScheduledRequest], meta: AttentionMetadata) -> None:
        lens = [s.request.num_computed_tokens + s.num_new_tokens for s in seqs]
        width = max(-(-n // self.block_size) for n in lens)
        meta.block_tables = self._tensor([s.block_ids[:width] + [0] * (width - len(s.block_ids[:width]))
                                          for s in seqs])
        starts = [0]
        for s in seqs:
            starts.append(starts[-1] + s.num_new_tokens)
        meta.query_start, meta.seq_lens = self._tensor(starts), self._tensor(lens)

    def _decode_tables(self, decodes: list[ScheduledRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        context_lens = [s.request.num_computed_tokens + 1 for s in decodes]
        max_blocks = max(-(-n // self.block_size) for n in context_lens)
        tables = [s.block_ids[:max_blocks] + [0] * (max_blocks - len(s.block_ids[:max_blocks])) for s in decodes]
        keys = torch.arange(max_blocks * self.block_size, device=self.device)
        mask = keys[None, :] < self._tensor(context_lens)[:, None]
        return self._tensor(tables), mask[:, None, None, :]

    def _prefill_chunks(self, prefills: list[ScheduledRequest], first_row: int) -> list[PrefillChunk]:
        chunks, row = [], first_row
        for s in prefills:
            ctx, n = s.request.num_computed_tokens, s.num_new_tokens
            num_blocks = -(-(ctx + n) // self.block_size)
            mask = causal_chunk_mask(ctx, n, self.device) if ctx else None
            chunks.append(PrefillChunk(row, n, ctx, self._tensor(s.block_ids[:num_blocks]), mask))
            row += n
        return chunks
