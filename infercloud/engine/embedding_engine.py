"""EmbeddingEngine: a sentence-transformers model folder on one device; texts or token ids in, vectors out.

The folder is read the way sentence-transformers reads it: modules.json lists the modules (a Pooling
module's folder holds its config; a Normalize module means unit-length outputs) and
sentence_bert_config.json gives max_seq_length. Nothing is cut silently: an input longer than
max_seq_length tokens (counting [CLS]/[SEP]) raises InputTooLongError unless the caller asks for
truncation (`truncate_to`). Text is then cut as sentence-transformers does (the end is dropped, [CLS]
first and [SEP] last are kept); token ids keep their first `truncate_to` ids. The token counts returned
are those of the inputs as computed, which is what usage should bill.
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


class InputTooLongError(ValueError):
    """An input has more tokens than the model takes, and no truncation was asked for."""

    def __init__(self, index: int, num_tokens: int, limit: int):
        super().__init__(f"input {index} has {num_tokens} tokens; the model takes at most {limit}")
        self.index = index
        self.num_tokens = num_tokens
        self.limit = limit


def truncate_ids(ids: list[int], max_tokens: int, is_text: bool) -> list[int]:
    """At most max_tokens ids: text keeps its last id ([SEP]) after the first max_tokens - 1 (as
    sentence-transformers cuts); token ids as given keep their first max_tokens."""
    if len(ids) <= max_tokens:
        return ids
    return ids[:max_tokens - 1] + [ids[-1]] if is_text else ids[:max_tokens]


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
        self.tokenizer.no_truncation()
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
        """Token ids with [CLS]/[SEP], whole (never cut). The empty string gives [CLS][SEP]."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def prepare(self, inputs: Sequence[str] | Sequence[Sequence[int]],
                truncate_to: int | None = None) -> list[list[int]]:
        """The model input for texts or token ids: tokenized, cut to `truncate_to` tokens when given, checked.

        Raises InputTooLongError for an input over max_seq_length (with no `truncate_to`), ValueError
        for a `truncate_to` outside 1..max_seq_length, an empty sequence or an id outside the vocabulary.
        """
        if truncate_to is not None and not 1 <= truncate_to <= self.max_seq_length:
            raise ValueError(f"truncate_to must be within 1..{self.max_seq_length}, got {truncate_to}")
        texts = iter(self.tokenize([x for x in inputs if isinstance(x, str)]))
        seqs = [(next(texts), True) if isinstance(x, str) else (list(x), False) for x in inputs]
        if truncate_to is not None:
            seqs = [(truncate_ids(ids, truncate_to, is_text), is_text) for ids, is_text in seqs]
        prepared = [ids for ids, _ in seqs]
        self.validate(prepared)
        return prepared

    def embed(self, texts: Sequence[str], truncate_to: int | None = None) -> tuple[torch.Tensor, list[int]]:
        """Embeddings [n, dim] float32 on CPU, and each text's token count (as `prepare` makes them)."""
        return self.embed_tokens(self.prepare(texts, truncate_to))

    def embed_tokens(self, token_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, list[int]]:
        """Embed token ids as given (the model input: include [CLS]/[SEP] as `tokenize` does).

        Raises as `validate` does (a sequence over max_seq_length too: nothing is cut here). Runs in
        chunks of max_batch_size, each padded to its own longest sequence.
        """
        seqs = [list(ids) for ids in token_ids]
        self.validate(seqs)
        parts = [self._forward(seqs[i:i + self.max_batch_size]) for i in range(0, len(seqs), self.max_batch_size)]
        vectors = torch.cat(parts) if parts else torch.empty(0, self.dim)
        return vectors, [len(ids) for ids in seqs]

    def validate(self, token_ids: Sequence[Sequence[int]]) -> None:
        """Raise ValueError for an empty sequence or an id outside the vocabulary, InputTooLongError
        for a sequence over max_seq_length."""
        for index, ids in enumerate(token_ids):
            if not ids:
                raise ValueError(f"input {index}: cannot embed an empty token sequence")
            if len(ids) > self.max_seq_length:
                raise InputTooLongError(index, len(ids), self.max_seq_length)
            if min(ids) < 0 or max(ids) >= self.vocab_size:
                raise ValueError(f"input {index}: token id out of range [0, {self.vocab_size})")

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
