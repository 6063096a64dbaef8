"""int8 weight-only quantization: every linear layer's weight stored as int8 with one scale per output channel.

Algorithm (quantize once, at load): for each row w of a weight [N, K], scale = max|w| / 127 and
q = round(w / scale) clamped to [-127, 127]; so w ~= q * scale, and x @ w.T == (x @ q.T) * scale.
A tied vocabulary projection gets its own int8 copy (the embedding table stays in the model dtype for
lookups). Activations stay in the model's dtype (bf16 where the CPU has it) between layers.

Matmul, by the best kernel this machine has (chosen once, `int8_kernel`):
  - "vnni": csrc/int8_linear.cpp on CPUs with AVX512-VNNI, at any number of rows: activations quantized to
    int8 in groups of 64 on the fly and multiplied by int8 dot products; weights packed at load as
    [N/16, K/4, 16, 4], with a per-group correction table. On the development box it streams weights at
    40-73 GB/s at one row (2.9-3.8x a bf16 GEMV) and computes 1.6-1.9x a bf16 GEMM's rate at 16-512 rows
    (`python -m infercloud.bench.linears`).
  - "aten": PyTorch's int8 weight-only kernel (`aten._weight_int8pack_mm`, bf16 activations on CPU), which
    dequantizes in registers: 2-4x faster than a bf16 GEMM up to KERNEL_MAX_ROWS rows, slower above.
Otherwise (above KERNEL_MAX_ROWS for "aten"; CUDA, no compiler, shapes the kernel does not take) the weight is
dequantized to the activation dtype and goes through the ordinary GEMM: `F.linear(x, q.to(x.dtype)) * scale`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infercloud.engine.kernels import cpu_ops

KERNEL_MAX_ROWS = 16   # aten's int8 kernel up to this many rows; dequantize + GEMM above
VNNI_GROUP = 64        # activation values per int8 scale in the VNNI kernel; K must be a multiple
VNNI_BLOCK = 16        # output channels per packed block; N must be a multiple


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (q [N, K] int8, scale [N] in the weight's dtype)."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale.to(weight.dtype)


def cpu_has_vnni(device: torch.device) -> bool:
    return device.type == "cpu" and bool(torch.cpu.get_capabilities().get("avx512_vnni"))


def vnni_fits(shape: tuple[int, ...]) -> bool:
    rows, cols = shape
    return rows % VNNI_BLOCK == 0 and cols % VNNI_GROUP == 0


def int8_kernel(device: torch.device, dtype: torch.dtype) -> str | None:
    """The int8 matmul here: "vnni" (any rows), "aten" (up to KERNEL_MAX_ROWS) or None (dequantize); probed once
    per model."""
    if cpu_has_vnni(device) and dtype in (torch.float32, torch.bfloat16) and cpu_ops(device):
        try:   # built without VNNI (an old compiler), the op refuses
            torch.ops.infercloud.int8_linear(torch.zeros(1, VNNI_GROUP, dtype=dtype),
                                             torch.zeros(1, VNNI_GROUP // 4, VNNI_BLOCK, 4, dtype=torch.int8),
                                             torch.zeros(1, VNNI_BLOCK, dtype=torch.int32), torch.ones(VNNI_BLOCK))
            return "vnni"
        except RuntimeError:
            pass
    return "aten" if aten_int8_runs(device, dtype) else None


def aten_int8_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether aten._weight_int8pack_mm runs for these activations (CPU, bf16)."""
    if device.type != "cpu" or dtype != torch.bfloat16 or not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return False
    try:
        torch.ops.aten._weight_int8pack_mm(torch.zeros(1, 8, dtype=dtype), torch.zeros(8, 8, dtype=torch.int8),
                                           torch.ones(8, dtype=dtype))
    except (RuntimeError, NotImplementedError):
        return False
    return True


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + bias, with q int8 [N, K] and a scale per output channel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kernel: str | None):
        super().__init__()
        q, scale = quantize_int8(weight)
        self.out_features, self.in_features = q.shape
        self.kernel = None if kernel == "vnni" and not vnni_fits(q.shape) else kernel
        if self.kernel == "vnni":   # [N/16, K/4, 16, 4]: 16 channels x 4 values of K per 64-byte line
            n, k = q.shape
            sums = q.view(n, k // VNNI_GROUP, VNNI_GROUP).sum(dim=2, dtype=torch.int32)
            self.register_buffer("qweight", q.view(n // VNNI_BLOCK, VNNI_BLOCK, k // 4, 4).transpose(1, 2).contiguous())
            self.register_buffer("comp", (128 * sums).T.contiguous())   # the kernel's unsigned offset, per group
            self.register_buffer("scale", scale.float())
        else:
            self.register_buffer("qweight", q)
            self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def weight_int8(self) -> torch.Tensor:
        """q [N, K] (a copy, from the packed layout, for "vnni")."""
        if self.kernel != "vnni":
            return self.qweight
        return self.qweight.transpose(1, 2).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.kernel == "vnni":
            y = torch.ops.infercloud.int8_linear(rows.contiguous(), self.qweight, self.comp, self.scale)
        elif self.kernel == "aten" and rows.shape[0] <= KERNEL_MAX_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(rows.contiguous(), self.qweight, self.scale)
        else:
            y = (F.linear(rows, self.weight_int8().to(x.dtype)) * self.scale).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def quantize_linears(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Replace every nn.Linear under `module` by an Int8Linear (in place)."""
    kernel = int8_kernel(device, dtype)
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Linear):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, Int8Linear(child.weight.data, None if child.bias is None else child.bias.data,
                                             kernel))


def int8_weight_bytes(shape: tuple[int, ...], dtype: torch.dtype, vnni: bool) -> int:
    """Bytes an Int8Linear holds for a weight of `shape`: one byte per element and a scale per output row; with
    the VNNI kernel (where `shape` fits it), fp32 scales and an int32 correction per row and group of 64."""
    rows, cols = shape
    if vnni and vnni_fits(shape):
        return rows * cols + rows * 4 + (cols // VNNI_GROUP) * rows * 4
    return rows * cols + rows * torch.empty((), dtype=dtype).element_size()
