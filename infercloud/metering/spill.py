"""Spill files: the usage rows a ledger could not write at shutdown, kept on disk for the next start.

A spill is a JSON-lines file (one usage row per line) in `infercloud_home()/spill/<database key>/`, where
the key is a short sha256 of the database URL with its password hidden: a spill is only ever replayed
into the database it was meant for. Each `write_spill` makes a new file (two gateways sharing a home never
write the same one): written under a temporary name, fsynced, renamed into place and its folder fsynced,
so a spill that `spill_files` lists is whole. Files are 0600 and folders 0700 (rows name tenants and what
they used). Datetimes are written as ISO text and read back as the naive UTC datetimes of the schema.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from pathlib import Path

import sqlalchemy as sa

from infercloud.paths import infercloud_home
from infercloud.store.schema import usage

SUFFIX = ".jsonl"
_COLUMNS = frozenset(column.name for column in usage.columns)
_DATETIME_COLUMNS = frozenset(column.name for column in usage.columns if isinstance(column.type, sa.DateTime))


def spill_dir_for(url: sa.URL, home: Path | None = None) -> Path:
    """The folder of spills meant for the database at `url` (its password plays no part)."""
    key = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return (home or infercloud_home()) / "spill" / key


def write_spill(folder: Path, rows: list[dict]) -> Path:
    """Write `rows` to a new spill file in `folder`, durably (on disk when this returns); its path."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"usage-{uuid.uuid4().hex}"
    partial, path = folder / f".{name}.partial", folder / f"{name}{SUFFIX}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, default=_encode) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    _fsync_dir(folder)
    return path


def spill_files(folder: Path) -> list[Path]:
    """The whole spill files in `folder`, oldest first (none when the folder does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"*{SUFFIX}"), key=lambda path: (path.stat().st_mtime_ns, path.name))


def read_spill(path: Path) -> list[dict]:
    """The rows of a spill file, as the ledger queued them. ValueError if a line is not a row."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(_decode(json.loads(line)))
    return rows


def _encode(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"a usage row holds a {type(value).__name__}, which a spill cannot write")


def _decode(row: object) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"a spill line is not a usage row: {row!r}")
    row = {name: value for name, value in row.items() if name in _COLUMNS}
    for name in _DATETIME_COLUMNS & row.keys():
        if isinstance(row[name], str):
            row[name] = dt.datetime.fromisoformat(row[name])
    return row


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
