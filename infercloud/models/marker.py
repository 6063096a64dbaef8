"""The `.infercloud.json` marker: proof that a pulled model folder is complete, and where it came from.

The marker is the last file written into a model folder, so a folder that has a valid
marker was fully built. It records the source wheel (package, version, file name and
sha256), what was taken from it, the model kind and when the folder was made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

MARKER_NAME = ".infercloud.json"


@dataclass(frozen=True)
class PullSource:
    """The wheel a model folder was built from."""

    package: str
    version: str
    wheel: str
    sha256: str
    member: str


@dataclass(frozen=True)
class PullMarker:
    """The content of a model folder's marker file."""

    name: str
    kind: str
    source_format: str
    source: PullSource
    created: str


def marker_path(model_dir: Path) -> Path:
    """Where the marker of `model_dir` lives."""
    return model_dir / MARKER_NAME


def write_marker(model_dir: Path, marker: PullMarker) -> None:
    """Write the marker into `model_dir` (call this last, once everything else is in place)."""
    text = json.dumps(asdict(marker), indent=2, sort_keys=True) + "\n"
    marker_path(model_dir).write_text(text, encoding="utf-8")


def read_marker(model_dir: Path) -> PullMarker | None:
    """The marker of `model_dir`, or None when it is missing or unreadable."""
    try:
        data = json.loads(marker_path(model_dir).read_text(encoding="utf-8"))
        source = PullSource(**data.pop("source"))
        return PullMarker(source=source, **data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def is_complete(model_dir: Path, name: str) -> bool:
    """True when `model_dir` holds a finished pull of model `name`."""
    marker = read_marker(model_dir)
    return marker is not None and marker.name == name and (model_dir / "config.json").is_file()
