"""Llama-family decoder (Llama, Qwen2, Mistral, SmolLM) over a flat token batch with paged attention.

Fused projections: q/k/v in one matmul (with bias for Qwen2), gate/up in one. RoPE in the HF
"rotate half" layout, RMSNorm in fp32, grouped-query attention, optionally tied embeddings.
Weights load from HF safetensors (memory-mapped by safetensors), shards fused on the way in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from infercloud.engine.attention import AttentionMetadata, paged_attention
from infercloud.engine.packed import PackedLinear, pack_linears, packs_weights
from infercloud.engine.quant import Int8Linear, int8_kernel, quantize_linears
from infercloud.models.weights import load_safetensors

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


@dataclass(frozen=True)
class LlamaArchConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    max_position_embeddings: int
    qkv_bias: bool
    tie_word_embeddings: bool
    sliding_window: int | None

    @classmethod
    def from_hf(cls, cfg: dict) -> "LlamaArchConfig":
        model_type = cfg.get("model_type", "llama")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        heads = cfg["num_attention_heads"]
        sliding = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            rope_scaling=None if rope_type == "default" else dict(rope, rope_type=rope_type),
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            qkv_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            sliding_window=sliding,
        )


def rope_inv_freq(cfg: LlamaArchConfig) -> torch.Tensor:
    """Inverse frequencies, with Llama 3 / linear scaling when the checkpoint asks for it."""
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
    scaling = cfg.rope_scaling
    if scaling is None:
        return inv.float()
    kind = scaling["rope_type"]
    if kind == "linear":
        return (inv / scaling["factor"]).float()
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        return torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled).float()
    raise ValueError(f"unsupported rope scaling {kind!r}")


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        if fused:
            return torch.ops.infercloud.rms_norm(x, self.weight, self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D]; cos/sin [T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def linear(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """layer(x), with one bf16 row run as two: a bf16 GEMM gives each row the same bits at any M >= 2, but
    M = 1 takes a GEMV path that sums in another order, and a sequence's tokens must not depend on whether it
    ran alone (int8 layers have their own paths, engine/quant.py)."""
    if x.shape[0] == 1 and x.dtype == torch.bfloat16 and not isinstance(layer, Int8Linear):
        return layer(torch.cat((x, x)))[:1]   # one op (repeat dispatches ~10 at decode's ~30 us per layer)
    return layer(x)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaArchConfig):
        super().__init__()
        self.cfg = cfg
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, q_size + 2 * kv_size, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(q_size, cfg.hidden_size, bias=False)
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.split = (q_size, kv_size, kv_size)
        self.scale = cfg.head_dim ** -0.5

    def forward(self, x, cos, sin, kv_cache: tuple[torch.Tensor, torch.Tensor], meta: AttentionMetadata,
                fused: bool = False):
        """One layer over the flat batch; `fused`: the compiled CPU ops (csrc/fused.cpp) for the elementwise steps."""
        cfg = self.cfg
        t = x.shape[0]
        qkv = linear(self.qkv_proj, self.input_layernorm(x, fused))
        q_size, kv_size, _ = self.split
        qk = qkv[:, :q_size + kv_size].view(t, cfg.num_heads + cfg.num_kv_heads, cfg.head_dim)
        qk = torch.ops.infercloud.rope_(qk, cos, sin) if fused else apply_rope(qk, cos, sin)
        q, k = qk[:, :cfg.num_heads], qk[:, cfg.num_heads:]   # query and key heads rotated in one pass
        v = qkv[:, q_size + kv_size:].view(t, cfg.num_kv_heads, cfg.head_dim)
        attn = linear(self.o_proj, paged_attention(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale).view(t, -1))
        if fused:
            h = torch.ops.infercloud.add_rms_norm(x, attn, self.post_attention_layernorm.weight,
                                                  self.post_attention_layernorm.eps)   # x += attn
            return x + linear(self.down_proj, torch.ops.infercloud.silu_and_mul(linear(self.gate_up_proj, h)))
        x = x + attn
        gate, up = linear(self.gate_up_proj, self.post_attention_layernorm(x)).chunk(2, dim=-1)
        return x + linear(self.down_proj, F.silu(gate) * up)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: LlamaArchConfig, max_model_len: int):
        super().__init__()
        self.cfg = cfg
        # built around an empty weight: initialising it (on meta) would import torch._refs, ~0.7 s of cold start
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.max_model_len = max_model_len
        self.fused = False   # the engine sets it where the compiled CPU ops run (engine/kernels.py)

    def init_rope(self, device: torch.device, dtype: torch.dtype) -> None:
        inv = rope_inv_freq(self.cfg).to(device)
        freqs = torch.outer(torch.arange(self.max_model_len, device=device, dtype=torch.float32), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos_table, self.sin_table = emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]], meta: AttentionMetadata) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        cos, sin = self.cos_table[positions], self.sin_table[positions]
        for layer, kv in zip(self.layers, kv_caches):
            x = layer(x, cos, sin, kv, meta, self.fused)
        return self.norm(x, self.fused)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = partial(F.linear, weight=self.embed_tokens.weight) if self.lm_head is None else self.lm_head
        return linear(head, hidden).float()

    def prepare_linears(self, quantization: str | None, device: torch.device, dtype: torch.dtype) -> None:
        """Linear layers as the engine runs them: int8 weights (engine/quant.py), or weights packed for oneDNN
        (engine/packed.py), or as loaded. A tied projection gets its own copy; the table stays for lookups."""
        if quantization is not None:
            quantize_linears(self, device, dtype)
            if self.lm_head is None:
                self.lm_head = Int8Linear(self.embed_tokens.weight.data, None, int8_kernel(device, dtype))
        elif packs_weights(device, dtype, quantization):
            pack_linears(self)
            if self.lm_head is None:
                self.lm_head = PackedLinear(self.embed_tokens.weight.data, None)

    # -- weights -----------------------------------------------------------------------------------
    def load_weights(self, model_dir: Path, device: torch.device, dtype: torch.dtype) -> None:
        def map_name(name: str) -> tuple[str | None, str | None]:
            target, shard = _map_hf_name(name)
            return (None, None) if target == "lm_head.weight" and self.lm_head is None else (target, shard)

        load_safetensors(self, model_dir, map_name, _SHARD_ORDER, device, dtype)


_SHARD_ORDER = {"qkv_proj": ("q", "k", "v"), "gate_up_proj": ("gate", "up")}
_RENAMES = {
    "self_attn.q_proj": ("qkv_proj", "q"), "self_attn.k_proj": ("qkv_proj", "k"),
    "self_attn.v_proj": ("qkv_proj", "v"), "self_attn.o_proj": ("o_proj", None),
    "mlp.gate_proj": ("gate_up_proj", "gate"), "mlp.up_proj": ("gate_up_proj", "up"),
    "mlp.down_proj": ("down_proj", None),
}


def _map_hf_name(name: str) -> tuple[str | None, str | None]:
    """HF checkpoint name -> (our parameter name, shard of a fused parameter or None)."""
    if name.startswith("model."):
        name = name[len("model."):]
    if "rotary_emb" in name:
        return None, None
    parts = name.split(".")
    if parts[0] == "layers":
        inner = ".".join(parts[2:-1])
        if inner in _RENAMES:
            fused, shard = _RENAMES[inner]
            return f"layers.{parts[1]}.{fused}.{parts[-1]}", shard
    return name, None
