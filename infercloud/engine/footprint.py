"""How much memory a model takes once loaded: its weights at the dtype it runs in, plus its KV cache."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from infercloud.engine.arch.llama import LlamaArchConfig
from infercloud.engine.config import EngineConfig
from infercloud.engine.runner import ModelRunner
from infercloud.models.local import LocalModel

_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def weight_elements(model_dir: Path) -> int:
    """Number of weight elements in the folder's safetensors files (read from their headers only)."""
    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def model_memory_bytes(model_dir: Path, kind: str, engine: EngineConfig) -> int:
    """Weights at the dtype the engine uses on its device, plus the KV cache a chat engine allocates."""
    device = engine.torch_device()
    dtype = torch.float32 if kind == "embedding" and engine.dtype == "auto" else engine.torch_dtype(device)
    weights = weight_elements(model_dir) * torch.empty((), dtype=dtype).element_size()
    if kind != "chat":
        return weights
    return weights + kv_cache_bytes(model_dir, engine, dtype)


def kv_cache_bytes(model_dir: Path, engine: EngineConfig, dtype: torch.dtype) -> int:
    """What LLMEngine allocates for the KV cache: num_kv_blocks blocks, or kv_cache_memory_gb rounded down."""
    arch = LlamaArchConfig.from_hf(LocalModel.open(model_dir).hf_config)
    per_block = ModelRunner.kv_bytes_per_block(arch, engine.block_size, dtype)
    blocks = engine.num_kv_blocks or max(1, int(engine.kv_cache_memory_gb * 2**30 // per_block))
    return blocks * per_block
