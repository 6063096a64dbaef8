"""The compiled elementwise ops (csrc/fused.cpp) against the plain PyTorch ops they replace, and the KV cache's
huge pages (runner.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from infercloud.engine.arch.llama import RMSNorm, apply_rope
from infercloud.engine.kernels import cpu_ops
from infercloud.engine.runner import cache_tensor


@pytest.fixture(scope="module", autouse=True)
def built():
    assert cpu_ops(torch.device("cpu")), "the C++ kernels must build on this machine (a compiler is part of the setup)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [64, 576, 70])   # 70: a scalar tail after the vector loop
def test_fused_ops_round_as_the_unfused_ones(dtype, width):
    torch.manual_seed(0)
    x, r = torch.randn(9, width).to(dtype), torch.randn(9, width).to(dtype)
    gu = torch.randn(9, 2 * width).to(dtype)
    gate, up = gu.chunk(2, dim=-1)
    assert torch.equal(torch.ops.infercloud.silu_and_mul(gu), F.silu(gate) * up)

    norm = RMSNorm(width, 1e-5)
    norm.weight.data = torch.rand(width).to(dtype) + 0.5
    fused, plain = norm(x, fused=True), norm(x, fused=False)
    assert torch.allclose(fused.float(), plain.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-5)
    summed = x.clone()
    torch.ops.infercloud.add_rms_norm(summed, r, norm.weight, norm.eps)   # summed += r, in place
    assert torch.equal(summed, x + r)

    heads = torch.randn(9, 4, 64).to(dtype)
    cos, sin = torch.randn(9, 64).to(dtype), torch.randn(9, 64).to(dtype)
    assert torch.equal(torch.ops.infercloud.rope_(heads.clone(), cos, sin), apply_rope(heads, cos, sin))


def test_kv_cache_tensors_are_zeroed_and_on_huge_pages_where_the_kernel_allows():
    t = cache_tensor((4096, 1024), torch.device("cpu"), torch.bfloat16)   # 8 MiB
    assert not t.any() and t.shape == (4096, 1024) and t.dtype == torch.bfloat16
    t.fill_(1.0)   # writable; faulted in now
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.is_file() or "[never]" in thp.read_text():
        return   # no huge pages on this kernel: zeroed memory is all there is to check
    start, end = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    huge_kb = 0
    mapping = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            lo, hi = (int(v, 16) for v in first.split("-"))
            mapping = (lo, hi)
        elif first == "AnonHugePages:" and mapping and mapping[0] < end and start < mapping[1]:
            huge_kb += int(line.split()[1])
    assert huge_kb >= 2048   # at least one 2 MiB page inside the tensor's 8 MiB
