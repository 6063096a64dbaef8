"""EngineConfig: the knobs of one engine (batching, KV cache, device), with defaults sized for a CPU box."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # torch is imported where a device or dtype is made, not by whoever reads a config
    import torch

DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("auto", "kernel", "sdpa")   # the compiled CPU kernel or SDPA (engine/kernels.py)
QUANTIZATIONS = ("int8",)                # weight-only int8 linear layers (engine/quant.py)


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
    dtype: str = "auto"                  # auto: bf16 on CUDA and on CPUs with native bf16, else fp32
    quantization: str | None = None      # int8: weight-only int8 linear layers (engine/quant.py)
    attention: str = "auto"              # auto | kernel | sdpa: the compiled CPU kernel or SDPA (engine/kernels.py)
    num_threads: int | None = None       # torch intra-op threads on CPU
    seed: int = 0                        # seeds the generators of requests that give no seed

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("block_size, max_num_seqs and max_num_batched_tokens must be positive")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)} or unset, "
                             f"got {self.quantization!r}")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, got {self.attention!r}")

    def torch_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" or cpu_has_bf16() else torch.float32
        return getattr(torch, self.dtype)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512_BF16 or AMX-BF16); elsewhere bf16 is emulated, slower than fp32."""
    import torch

    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
