"""int8 weight-only quantization: every linear layer's weight stored as int8 with one scale per output channel.

Algorithm (quantize once, at load): for each row w of a weight [N, K], scale = max|w| / 127 and
q = round(w / scale) clamped to [-127, 127]; so w ~= q * scale, and x @ w.T == (x @ q.T) * scale.
A tied vocabulary projection gets its own int8 copy (the embedding table stays in the model dtype for
lookups). Activations stay in the model's dtype (bf16 where the CPU has it).

Matmul, chosen per call by the number of rows M of the activations (measured on an AVX-512 CPU,
docs/benchmarks.md): PyTorch's int8 weight-only kernel (`aten._weight_int8pack_mm`, bf16 activations on
CPU) streams int8 weights and dequantizes in registers, 2-4x faster than a bf16 GEMM for M <= 16 (decode
at small batches is bound by reading weights); at larger M it is slower than a bf16 GEMM, so there,
and wherever the kernel is missing (CUDA, fp32 activations, where it is 5-20x slower), the weight is
dequantized to the activation dtype and goes through the ordinary GEMM: `F.linear(x, q.to(x.dtype)) * scale`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZATIONS = ("int8",)
KERNEL_MAX_ROWS = 16   # the fused int8 kernel up to this many rows; dequantize + GEMM above


def check_quantization(quantization: str | None) -> None:
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)} or unset, got {quantization!r}")


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (q [N, K] int8, scale [N] in the weight's dtype)."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale.to(weight.dtype)


def has_int8_kernel(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether aten._weight_int8pack_mm runs for these activations (CPU, bf16); probed once per model."""
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

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, use_kernel: bool):
        super().__init__()
        q, scale = quantize_int8(weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.use_kernel = use_kernel
        self.out_features, self.in_features = q.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.use_kernel and rows.shape[0] <= KERNEL_MAX_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(rows.contiguous(), self.qweight, self.scale)
        else:
            y = F.linear(rows, self.qweight.to(x.dtype)) * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def quantize_linears(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Replace every nn.Linear under `module` by an Int8Linear (in place)."""
    use_kernel = has_int8_kernel(device, dtype)
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Linear):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, Int8Linear(child.weight.data, None if child.bias is None else child.bias.data,
                                             use_kernel))


def int8_weight_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes an Int8Linear holds for a weight of `shape`: one byte per element and a scale per output row."""
    rows, cols = shape
    return rows * cols + rows * torch.empty((), dtype=dtype).element_size()
