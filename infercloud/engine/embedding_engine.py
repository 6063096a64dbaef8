"""EmbeddingEngine: a sentence-transformers model folder on one device; texts or token ids in, vectors out.

The folder is read the way sentence-transformers reads it: modules.json lists the modules (a Pooling
module's folder holds its config; a Normalize module means unit-length outputs) and
sentence_bert_config.json gives max_seq_length. Inputs longer than max_seq_length tokens are truncated
to it, as sentence-transformers does (the [SEP] is kept at the end for text input); the token counts
returned are those of the truncated inputs, which is what was computed and what usage should bill.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from infercloud.engine.arch.bert import BertArchConfig, BertModel
from infercloud.models.local import LocalModel

PoolingMode = Literal["mean", "cls"]


@dataclass(frozen=True)
class SentenceEmbeddingConfig:
    """How token states become one vector: pooling, normalization and the input length limit."""

    pooling: PoolingMode
    normalize: bool
    max_seq_length: int

    @classmethod
    def from_dir(cls, path: Path, max_position_embeddings: int) -> "SentenceEmbeddingConfig":
        modules = _read_json(path / "modules.json") or []
        types = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules}
        pooling_dir = path / types["Pooling"].get("path", "") if "Pooling" in types else path / "1_Pooling"
        max_len = _read_json(path / "sentence_bert_config.json").get("max_seq_length") or max_position_embeddings
        return cls(pooling=_pooling_mode(_read_json(pooling_dir / "config.json")),
                   normalize="Normalize" in types, max_seq_length=min(max_len, max_position_embeddings))


def _pooling_mode(cfg: dict) -> PoolingMode:
    """The single pooling mode a Pooling config enables (mean when there is no config)."""
    enabled = [key for key, on in cfg.items() if key.startswith("pooling_mode") and on is True]
    if not cfg or enabled == ["pooling_mode_mean_tokens"]:
        return "mean"
    if enabled == ["pooling_mode_cls_token"]:
        return "cls"
    raise ValueError(f"unsupported pooling {enabled or cfg}; supported: mean tokens or cls token alone")


def _read_json(path: Path) -> dict | list:
    return json.loads(path.read_text()) if path.is_file() else {}


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _resolve_device(device: str) -> torch.device:
    """The torch device for a name: "auto" is CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class EmbeddingEngine:
    def __init__(self, model_dir: str | Path, device: str = "auto", max_batch_size: int = 32,
                 dtype: str = "float32"):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be positive")
        local = LocalModel.open(model_dir)
        self.model_dir = local.path
        self.max_batch_size = max_batch_size
        self.device = _resolve_device(device)
        arch = BertArchConfig.from_hf(local.hf_config)
        self.config = SentenceEmbeddingConfig.from_dir(local.path, arch.max_position_embeddings)
        self.vocab_size = arch.vocab_size
        self.tokenizer = Tokenizer.from_file(str(local.tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.config.max_seq_length)
        with torch.device("meta"):
            model = BertModel(arch)
        model = model.to_empty(device=self.device)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.dtype = _DTYPES[dtype]
        model.load_weights(local.path, self.device, self.dtype)
        self.model = model.eval()
        self._dim = arch.hidden_size

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with [CLS]/[SEP], truncated to max_seq_length. The empty string gives [CLS][SEP]."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """Embeddings [n, dim] float32 on CPU, and each text's token count after truncation."""
        return self.embed_tokens(self.tokenize(texts))

    def embed_tokens(self, token_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, list[int]]:
        """Embed token ids as given (the model input: include [CLS]/[SEP] as `tokenize` does).

        Sequences longer than max_seq_length keep their first max_seq_length tokens. Runs in
        chunks of max_batch_size, each padded to its own longest sequence.
        """
        seqs = [list(ids[:self.max_seq_length]) for ids in token_ids]
        self.validate(seqs)
        parts = [self._forward(seqs[i:i + self.max_batch_size]) for i in range(0, len(seqs), self.max_batch_size)]
        vectors = torch.cat(parts) if parts else torch.empty(0, self.dim)
        return vectors, [len(ids) for ids in seqs]

    def validate(self, token_ids: Sequence[Sequence[int]]) -> None:
        """Raise ValueError for an empty sequence or an id outside the vocabulary."""
        for ids in token_ids:
            if not ids:
                raise ValueError("cannot embed an empty token sequence")
            if min(ids) < 0 or max(ids) >= self.vocab_size:
                raise ValueError(f"token id out of range [0, {self.vocab_size})")

    @torch.inference_mode()
    def _forward(self, seqs: list[list[int]]) -> torch.Tensor:
        longest = max(len(ids) for ids in seqs)
        input_ids = torch.tensor([ids + [0] * (longest - len(ids)) for ids in seqs], device=self.device)
        lengths = torch.tensor([len(ids) for ids in seqs], device=self.device)
        mask = torch.arange(longest, device=self.device)[None, :] < lengths[:, None]
        hidden = self.model(input_ids, mask).float()  # pool and normalize in fp32 whatever the weights are
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = (hidden * mask[..., None]).sum(1) / lengths[:, None].to(hidden.dtype)
        if self.config.normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled.float().cpu()
