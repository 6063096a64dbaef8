"""Loading HF safetensors into a module: names mapped per architecture, fused shards concatenated, none missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

# checkpoint name -> (parameter name, shard of a fused parameter or None); (None, None) skips the weight
NameMap = Callable[[str], tuple[str | None, str | None]]


def load_safetensors(module: nn.Module, model_dir: Path, map_name: NameMap, shard_orders: dict[str, tuple[str, ...]],
                     device: torch.device, dtype: torch.dtype) -> None:
    """Fill every parameter of `module` from `model_dir/*.safetensors` (read memory-mapped by safetensors).

    `shard_orders` maps a fused parameter's module name (e.g. "qkv_proj") to the order its shards are
    concatenated in. Unexpected weights, missing shards and parameters left unfilled all raise KeyError.
    """
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    params = dict(module.named_parameters())
    shards: dict[str, dict[str, torch.Tensor]] = {}
    loaded: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                target, shard = map_name(name)
                if target is None:
                    continue
                if target not in params:
                    raise KeyError(f"unexpected weight {name} in {file.name}")
                if shard is None:
                    params[target].data = f.get_tensor(name).to(device=device, dtype=dtype)
                    loaded.add(target)
                else:
                    shards.setdefault(target, {})[shard] = f.get_tensor(name)
    for target, parts in shards.items():
        order = shard_orders[target.rsplit(".", 2)[-2]]
        if set(parts) != set(order):
            raise KeyError(f"{target}: missing shards {set(order) - set(parts)}")
        params[target].data = torch.cat([parts[s] for s in order]).to(device=device, dtype=dtype)
        loaded.add(target)
    missing = set(params) - loaded
    if missing:
        raise KeyError(f"weights missing from {model_dir}: {sorted(missing)[:5]}")
