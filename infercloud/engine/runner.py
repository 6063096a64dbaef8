"""ModelRunner: packs a scheduled step into flat tensors, runs one forward pass, returns logits to sample.

Layout of the flat batch: every single-token request (decodes, and prefills with one token left) first,
then each multi-token prefill chunk. Positions, cache slots and block tables come from the scheduler's
output; logits are computed only for rows that end a request's known tokens (the rest of a prefill
chunk needs no logits, which saves the vocabulary projection on every prompt token).
"""

from __future__ import annotations

import torch

from infercloud.engine.arch.llama import LlamaForCausalLM
from infercloud.engine.attention import AttentionMetadata, PrefillChunk, causal_chunk_mask
from infercloud.engine.request import Request
from infercloud.engine.scheduler import ScheduledRequest, SchedulerOutput


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int,
                 device: torch.device, dtype: torch.dtype):
        cfg = model.cfg
        self.model = model
        self.block_size = block_size
        self.device = device
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.kv_caches = [(torch.zeros(shape, device=device, dtype=dtype),
                           torch.zeros(shape, device=device, dtype=dtype)) for _ in range(cfg.num_layers)]

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
        meta = AttentionMetadata(slot_mapping=self._tensor(slots), num_decodes=len(decodes),
                                 decode_block_tables=None, decode_mask=None,
                                 prefills=self._prefill_chunks(prefills, len(decodes)))
        if decodes:
            meta.decode_block_tables, meta.decode_mask = self._decode_tables(decodes)
        hidden = self.model(self._tensor(input_ids), self._tensor(positions), self.kv_caches, meta)
        logits = self.model.compute_logits(hidden[self._tensor(sample_rows)])
        return logits, sampled

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
