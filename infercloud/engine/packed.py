"""Linear layers whose weights are packed once, at load, into oneDNN's blocked layout (CPU, fp32 and bf16).

F.linear hands oneDNN a plain row-major weight, which it reorders into its blocked layout on every call.
Packing once (torch.ops.mkldnn._reorder_linear_weight, the path inductor takes for frozen weights) makes a
decode step's GEMMs 1.2-4x faster at 1-64 rows on the development box (docs/benchmarks.md), with results
bit for bit those of F.linear in bf16. A tied vocabulary projection gets its own packed copy (the
embedding table stays for lookups), which footprint.py counts.
"""

from __future__ import annotations

import torch
from torch import nn


def packs_weights(device: torch.device, dtype: torch.dtype, quantization: str | None) -> bool:
    """Whether the engine packs its linear weights: CPU with oneDNN, fp32 or bf16, not quantized."""
    return (device.type == "cpu" and quantization is None and dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available())


class PackedLinear(nn.Module):
    """y = x @ weight.T + bias, the weight held in oneDNN's layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        y = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


def pack_linears(module: nn.Module) -> None:
    """Replace every nn.Linear under `module` by a PackedLinear (in place)."""
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Linear):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, PackedLinear(child.weight.data, None if child.bias is None else child.bias.data))
