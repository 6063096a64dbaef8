"""EngineConfig: the knobs of one engine (batching, KV cache, device), with defaults sized for a CPU box."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    num_kv_blocks: int | None = None     # None: as many as kv_cache_memory_gb holds
    kv_cache_memory_gb: float = 1.0
    max_num_seqs: int = 128
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None     # None: the model's own context window
    enable_prefix_caching: bool = True
    device: str = "auto"                 # auto: cuda when available, else cpu
    dtype: str = "auto"                  # auto: fp32 on CPU, bf16 on CUDA
    num_threads: int | None = None       # torch intra-op threads on CPU
    seed: int = 0                        # seeds the generators of requests that give no seed

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("block_size, max_num_seqs and max_num_batched_tokens must be positive")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]
