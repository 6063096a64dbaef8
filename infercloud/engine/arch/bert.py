"""BERT encoder (embedding models such as all-MiniLM-L6-v2): padded batch in, last hidden states out.

Post-LayerNorm BERT: embeddings (word + absolute position + token type) then LayerNorm; each layer is
self-attention over the non-padding keys (fused q/k/v projection, `F.scaled_dot_product_attention`
with a boolean key mask) + residual + LayerNorm, then a GELU MLP + residual + LayerNorm. Padding is
removed outside attention: the dense layers see only real tokens.
Weights load from HF safetensors, with or without the `bert.` prefix; pooler and MLM heads are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from infercloud.models.weights import load_safetensors

_GELU_APPROXIMATION = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}


@dataclass(frozen=True)
class BertArchConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    gelu_approximation: str

    @classmethod
    def from_hf(cls, cfg: dict) -> "BertArchConfig":
        if cfg.get("model_type", "bert") != "bert":
            raise ValueError(f"unsupported model_type {cfg.get('model_type')!r}; expected 'bert'")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"unsupported position_embedding_type {cfg['position_embedding_type']!r}")
        act = cfg.get("hidden_act", "gelu")
        if act not in _GELU_APPROXIMATION:
            raise ValueError(f"unsupported hidden_act {act!r}; supported: {sorted(_GELU_APPROXIMATION)}")
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            max_position_embeddings=cfg.get("max_position_embeddings", 512),
            type_vocab_size=cfg.get("type_vocab_size", 2),
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
            gelu_approximation=_GELU_APPROXIMATION[act],
        )


class BertLayer(nn.Module):
    def __init__(self, cfg: BertArchConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.qkv_proj = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.mlp_in = nn.Linear(h, cfg.intermediate_size)
        self.mlp_out = nn.Linear(cfg.intermediate_size, h)
        self.mlp_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, rows: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x [T, H] real tokens only; rows [T] their row in the padded [B*S] grid; key_mask [B, 1, 1, S]."""
        b, s = key_mask.shape[0], key_mask.shape[-1]
        h = x.shape[1]
        heads = self.cfg.num_heads
        padded = x.new_zeros(b * s, 3 * h).index_copy_(0, rows, self.qkv_proj(x))
        q, k, v = padded.view(b, s, 3, heads, h // heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        attn = attn.transpose(1, 2).reshape(b * s, h).index_select(0, rows)
        x = self.attn_norm(x + self.attn_out(attn))
        mlp = self.mlp_out(F.gelu(self.mlp_in(x), approximate=self.cfg.gelu_approximation))
        return self.mlp_norm(x + mlp)


class BertModel(nn.Module):
    def __init__(self, cfg: BertArchConfig):
        super().__init__()
        self.cfg = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.embed_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, attention_mask [B, S] (mask 1 for tokens, 0 for padding) -> hidden [B, S, H], 0 at padding.

        Only real tokens go through the embeddings, projections and MLPs (as a flat [T, H] batch);
        padding exists only inside attention, so a batch of mixed lengths costs what its tokens cost.
        """
        b, s = input_ids.shape
        rows = attention_mask.reshape(-1).nonzero().squeeze(1)
        positions = torch.arange(s, device=input_ids.device).repeat(b).index_select(0, rows)
        ids = input_ids.reshape(-1).index_select(0, rows)
        types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids.reshape(-1).index_select(0, rows)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        x = self.embed_norm(x)
        key_mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, rows, key_mask)
        return x.new_zeros(b * s, x.shape[1]).index_copy_(0, rows, x).view(b, s, -1)

    # -- weights -----------------------------------------------------------------------------------
    def load_weights(self, model_dir: Path, device: torch.device, dtype: torch.dtype) -> None:
        load_safetensors(self, model_dir, _map_hf_name, {"qkv_proj": ("q", "k", "v")}, device, dtype)


_EMBEDDING_RENAMES = {
    "word_embeddings": "word_embeddings", "position_embeddings": "position_embeddings",
    "token_type_embeddings": "token_type_embeddings", "LayerNorm": "embed_norm",
}
_LAYER_RENAMES = {
    "attention.self.query": ("qkv_proj", "q"), "attention.self.key": ("qkv_proj", "k"),
    "attention.self.value": ("qkv_proj", "v"), "attention.output.dense": ("attn_out", None),
    "attention.output.LayerNorm": ("attn_norm", None), "intermediate.dense": ("mlp_in", None),
    "output.dense": ("mlp_out", None), "output.LayerNorm": ("mlp_norm", None),
}
_PARAM_RENAMES = {"gamma": "weight", "beta": "bias"}  # LayerNorm names in old TF-converted checkpoints


def _map_hf_name(name: str) -> tuple[str | None, str | None]:
    """HF checkpoint name -> (our parameter name, q/k/v shard or None); (None, None) for ignored weights."""
    name = name.removeprefix("bert.")
    if name.startswith(("pooler.", "cls.")) or name.endswith("position_ids"):
        return None, None
    module, _, param = name.rpartition(".")
    param = _PARAM_RENAMES.get(param, param)
    parts = module.split(".")
    if parts[0] == "embeddings" and len(parts) == 2 and parts[1] in _EMBEDDING_RENAMES:
        return f"{_EMBEDDING_RENAMES[parts[1]]}.{param}", None
    if parts[:2] == ["encoder", "layer"] and len(parts) > 3:
        inner = ".".join(parts[3:])
        if inner in _LAYER_RENAMES:
            ours, shard = _LAYER_RENAMES[inner]
            return f"layers.{parts[2]}.{ours}.{param}", shard
    return name, None
