"""How much memory a model takes once loaded: its weights at the dtype it runs in, plus its KV cache."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import safe_open

from infercloud.engine.arch.llama import LlamaArchConfig
from infercloud.engine.config import EngineConfig
from infercloud.engine.packed import packs_weights
from infercloud.engine.quant import cpu_has_vnni, int8_weight_bytes
from infercloud.engine.runner import ModelRunner
from infercloud.models.local import LocalModel

_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def weight_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight in the folder's safetensors files (read from their headers only)."""
    shapes = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def weight_elements(model_dir: Path) -> int:
    """Number of weight elements in the folder's safetensors files."""
    return sum(math.prod(shape) for shape in weight_shapes(model_dir).values())


def model_memory_bytes(model_dir: Path, kind: str, engine: EngineConfig) -> int:
    """Weights as the engine holds them on its device (dtype, int8 linear layers), plus a chat engine's KV cache."""
    device = engine.torch_device()
    dtype = torch.float32 if kind == "embedding" and engine.dtype == "auto" else engine.torch_dtype(device)
    if kind != "chat":
        return weight_elements(model_dir) * torch.empty((), dtype=dtype).element_size()
    packed = packs_weights(device, dtype, engine.quantization)
    vnni = engine.quantization is not None and cpu_has_vnni(device) and dtype in (torch.float32, torch.bfloat16)
    return (chat_weight_bytes(model_dir, dtype, engine.quantization, packed, vnni)
            + kv_cache_bytes(model_dir, engine, dtype))


def chat_weight_bytes(model_dir: Path, dtype: torch.dtype, quantization: str | None, packed: bool = False,
                      vnni: bool = False) -> int:
    """A decoder's weights in `dtype`; with int8, its linear layers (and a tied projection's own copy) in int8,
    with the VNNI kernel's tables where `vnni` (engine/quant.py; where the kernel then fails to build, the
    engine holds less than this); packed for oneDNN, a tied projection's own packed copy besides."""
    elem = torch.empty((), dtype=dtype).element_size()
    shapes = weight_shapes(model_dir)
    tied = "lm_head.weight" not in shapes
    if quantization is None:
        total = sum(math.prod(shape) for shape in shapes.values()) * elem
        return total + (math.prod(_embedding_shape(shapes)) * elem if packed and tied else 0)
    total = 0
    for name, shape in shapes.items():
        linear = name.endswith("_proj.weight") or name == "lm_head.weight"
        total += int8_weight_bytes(shape, dtype, vnni) if linear else math.prod(shape) * elem
    if tied:   # the int8 projection is a copy of the table
        total += int8_weight_bytes(_embedding_shape(shapes), dtype, vnni)
    return total


def _embedding_shape(shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    return next(shape for name, shape in shapes.items() if name.endswith("embed_tokens.weight"))


def kv_cache_bytes(model_dir: Path, engine: EngineConfig, dtype: torch.dtype) -> int:
    """What LLMEngine allocates for the KV cache: num_kv_blocks blocks, or kv_cache_memory_gb rounded down."""
    arch = LlamaArchConfig.from_hf(LocalModel.open(model_dir).hf_config)
    per_block = ModelRunner.kv_bytes_per_block(arch, engine.block_size, dtype)
    blocks = engine.num_kv_blocks or max(1, int(engine.kv_cache_memory_gb * 2**30 // per_block))
    return blocks * per_block
