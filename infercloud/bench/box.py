"""The box a benchmark ran on: its CPU and the flags that pick the kernels, and its measured ceilings.

Numbers from two boxes are easily mistaken for one: an AMD EPYC without AMX runs fp32 GEMMs at a
fraction of what a Xeon with AMX does. So every bench JSON records the CPU model and flags
(`cpu_description`, cheap), and `bench compare` also measures what this box can do with the threads
torch has (`ceilings`, about two seconds): GEMM GFLOP/s in fp32 and bf16 at a decode shape (batch 64
through SmolLM2's 576 x 1536 MLP matrix) and a large square one, int8 weight-only GEMM where torch has
the kernel, the engine's int8 VNNI kernel (engine/quant.py) at both shapes where the CPU has VNNI, and memory
bandwidth (a 256 MB copy, bytes read plus written per second). Results are then
read as fractions of these ceilings.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
DECODE_SHAPE = (64, 576, 1536)   # (batch, in, out): one MLP matrix of SmolLM2-135M at batch 64
LARGE_SHAPE = (1024, 1024, 1024)


def cpu_description(cpuinfo: str | None = None) -> dict:
    """CPU model, the kernel-relevant flags it has, logical CPUs and torch's threads."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_flags": [f for f in FLAGS if f in flags], "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def ceilings(seconds: float = 0.25) -> dict:
    """What this box measures now, with torch's current threads (each figure timed for about `seconds`)."""
    out = {f"gemm_{name}_gflops": round(_gemm(shape, dtype, seconds), 1)
           for name, shape, dtype in (("fp32_decode", DECODE_SHAPE, torch.float32),
                                      ("bf16_decode", DECODE_SHAPE, torch.bfloat16),
                                      ("fp32_large", LARGE_SHAPE, torch.float32),
                                      ("bf16_large", LARGE_SHAPE, torch.bfloat16))}
    out["gemm_int8_weight_decode_gflops"] = _int8_weight_gemm(DECODE_SHAPE, seconds)
    out["gemm_int8_vnni_decode_gflops"] = _int8_vnni_gemm(DECODE_SHAPE, seconds)
    out["gemm_int8_vnni_large_gflops"] = _int8_vnni_gemm(LARGE_SHAPE, seconds)
    out["memory_gbs"] = round(_bandwidth(256 * 2**20, seconds), 1)
    return out


def _gemm(shape: tuple[int, int, int], dtype: torch.dtype, seconds: float) -> float:
    m, k, n = shape
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    return 2 * m * k * n / _per_call(lambda: torch.mm(a, b), seconds) / 1e9


def _int8_weight_gemm(shape: tuple[int, int, int], seconds: float) -> float | None:
    """bf16 activations times int8 weights with per-channel scales (torch's weight-only kernel); None without it."""
    m, k, n = shape
    kernel = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
    if kernel is None:
        return None
    x = torch.randn(m, k).to(torch.bfloat16)
    w = torch.randint(-128, 127, (n, k), dtype=torch.int8)
    scales = torch.rand(n).to(torch.bfloat16)
    try:
        return round(2 * m * k * n / _per_call(lambda: kernel(x, w, scales), seconds) / 1e9, 1)
    except RuntimeError:
        return None


def _int8_vnni_gemm(shape: tuple[int, int, int], seconds: float) -> float | None:
    """The engine's int8 kernel (int8 activations and weights, VNNI dot products); None where it does not run."""
    from infercloud.engine.quant import Int8Linear, int8_kernel

    if int8_kernel(torch.device("cpu"), torch.bfloat16) != "vnni":
        return None
    m, k, n = shape
    x = torch.randn(m, k).to(torch.bfloat16)
    layer = Int8Linear(torch.randn(n, k).to(torch.bfloat16), None, "vnni")
    return round(2 * m * k * n / _per_call(lambda: layer(x), seconds) / 1e9, 1)


def _bandwidth(num_bytes: int, seconds: float) -> float:
    src = torch.empty(num_bytes, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    return 2 * num_bytes / _per_call(lambda: dst.copy_(src), seconds) / 1e9


def _per_call(call: Callable[[], object], seconds: float) -> float:
    """Seconds per call: one untimed call, then as many as fit in `seconds` (at least 3)."""
    call()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls
