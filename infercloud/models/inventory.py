"""What is on disk under models_dir(): listing model folders with their size, and removing one."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from infercloud.models.catalog import (
    CATALOG,
    ModelNotFoundError,
    is_model_folder,
    model_path,
    models_dir,
)
from infercloud.models.marker import read_marker
from infercloud.models.random_model import is_random_weights


@dataclass(frozen=True)
class ModelOnDisk:
    """One row of `infercloud models list`: a catalog model or another folder under models_dir()."""

    name: str
    kind: str | None
    in_catalog: bool
    is_pulled: bool
    size_bytes: int | None
    path: Path
    is_random_weights: bool = False  # made by `infercloud models create-random`, for load tests


def models_on_disk() -> list[ModelOnDisk]:
    """Every catalog model (pulled or not), then every other model folder under models_dir()."""
    rows = [_describe(entry.name, entry.kind, in_catalog=True) for entry in CATALOG]
    known = {entry.name for entry in CATALOG}
    root = models_dir()
    others = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for name in others:
        if name not in known and not name.startswith("."):  # hidden: staging dirs of a pull
            marker = read_marker(root / name)
            rows.append(_describe(name, marker.kind if marker else None, in_catalog=False))
    return rows


def remove_model(name: str) -> Path:
    """Delete the folder of model `name` and return its path; ModelNotFoundError when there is none."""
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ModelNotFoundError(f"'{name}' is not a model name")
    path = model_path(name)
    if not path.is_dir():
        raise ModelNotFoundError(f"model '{name}' is not pulled (no folder at {path})")
    # Rename first, so the model disappears at once even if deleting the files takes a while.
    trash = Path(tempfile.mkdtemp(prefix=f".{name}.rm-", dir=path.parent))
    path.rename(trash / name)
    shutil.rmtree(trash)
    return path


def folder_size(path: Path) -> int:
    """The total size in bytes of the files under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _describe(name: str, kind: str | None, *, in_catalog: bool) -> ModelOnDisk:
    path = model_path(name)
    exists = path.is_dir()
    return ModelOnDisk(
        name=name,
        kind=kind,
        in_catalog=in_catalog,
        is_pulled=exists and is_model_folder(path),
        size_bytes=folder_size(path) if exists else None,
        path=path,
        is_random_weights=not in_catalog and is_random_weights(path),
    )
