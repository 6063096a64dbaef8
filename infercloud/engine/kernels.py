"""The engine's compiled CPU kernels (csrc/): built once per machine with the C++ compiler at engine start,
cached by PyTorch's extension builder across restarts, never in the request path.

csrc/paged_attention.cpp: torch.ops.infercloud.paged_attention; csrc/fused.cpp: rms_norm, add_rms_norm,
silu_and_mul and rope_; csrc/int8_linear.cpp: int8_linear (engine/quant.py). `cpu_ops(device)` says whether they run here (a CPU, and the build succeeded); where
they do not (no compiler, CUDA), the engine runs attention through SDPA on gathered copies
(engine/attention.py) and the layers' elementwise steps as plain PyTorch ops (arch/llama.py).
The build targets this CPU (-march=native), so the cache key names the CPU's features: a cache copied to
another machine is rebuilt, never run on an instruction set it lacks.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from pathlib import Path

import torch

log = logging.getLogger("infercloud.engine")

SOURCES = sorted((Path(__file__).parent / "csrc").glob("*.cpp"))


class KernelUnavailable(RuntimeError):
    """A compiled kernel the config asks for cannot be built here."""


VECTOR_MULTIPLE = 16   # block_size and head_dim the kernel takes: whole AVX-512 vectors of fp32
MAX_BLOCK_SIZE = 256   # a chunk's scores fit the kernel's buffers


def attention_kernel(attention: str, device: torch.device, block_size: int, head_dim: int):
    """The op an engine attends with: auto = the kernel where it builds and fits the shapes, else SDPA (None);
    kernel = the kernel or KernelUnavailable; sdpa = None."""
    if attention == "sdpa":
        return None
    fits = block_size % VECTOR_MULTIPLE == 0 and block_size <= MAX_BLOCK_SIZE and head_dim % VECTOR_MULTIPLE == 0
    op = torch.ops.infercloud.paged_attention.default if fits and cpu_ops(device) else None
    if op is None and attention == "kernel":
        raise KernelUnavailable(f"attention: kernel needs a CPU device, a C++ compiler, and block_size and head_dim "
                                f"multiples of {VECTOR_MULTIPLE}, block_size at most {MAX_BLOCK_SIZE} "
                                f"(got {device.type}, {block_size}, {head_dim})")
    return op


def cpu_ops(device: torch.device) -> bool:
    """Whether the compiled ops run on `device`, building them on first use."""
    return device.type == "cpu" and _loaded()


@functools.cache
def _loaded() -> bool:
    """Build (or load from the cache) once per process; a failed build is not retried by every engine."""
    if hasattr(torch.ops.infercloud, "paged_attention"):
        return True
    try:
        _build()
    except Exception as exc:   # no compiler, a failed build: serve with plain PyTorch instead, and say so
        log.warning("compiled CPU kernels unavailable (%s: %s); attention runs through SDPA on gathered "
                    "copies (INFERCLOUD_KERNEL_VERBOSE=1 shows the build)", type(exc).__name__, exc)
        return False
    return True


def _vector_flags(caps: dict) -> list[str]:
    """ATen's Vectorized<float> at the widest width this CPU runs (it is scalar unless told)."""
    if all(caps.get(f) for f in ("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq")):
        return ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if caps.get("avx2") and caps.get("fma3"):
        return ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def _build() -> None:
    from torch.utils import cpp_extension

    caps = torch.cpu.get_capabilities()
    features = ",".join(sorted(k for k, v in caps.items() if v is True))
    sources = "|".join(source.read_bytes().hex() for source in SOURCES)
    # -fopenmp: at::parallel_for is inline and runs on one thread without it; the process already has torch's
    # libgomp loaded, which the built library then uses (same soname), so there is one thread pool
    cflags = ["-O3", "-march=native", "-fopenmp", *_vector_flags(caps)]
    tag = hashlib.sha256(f"{features}|{sources}|{cflags}".encode()).hexdigest()[:12]  # the ISA, the code, the flags
    start = time.perf_counter()
    cpp_extension.load(name=f"infercloud_kernels_{tag}", sources=[str(source) for source in SOURCES],
                       extra_cflags=cflags,
                       extra_ldflags=["-fopenmp"], is_python_module=False,
                       verbose=bool(os.environ.get("INFERCLOUD_KERNEL_VERBOSE")))
    log.info("compiled CPU kernels ready in %.1f s (built once per machine, then loaded from torch's extension "
             "cache, TORCH_EXTENSIONS_DIR)", time.perf_counter() - start)
