"""Peer virtualenvs: create one under the peer's folder, pip-install into it, and mark it complete.

An install is a list of steps (`PipStep`s: install these requirements, or uninstall these
packages). `ensure_venv()` runs them in order into `<peer dir>/venv`, with pip's output
appended to `<peer dir>/install.log`, and writes `<peer dir>/installed.json` (what was
installed and how long it took) only when every step succeeded; with that marker present it
does nothing. A failed step raises PeerError naming the package(s) and showing the log tail.
Installs that take minutes (llama.cpp builds from source) log progress lines to that file;
run `tail -f` on it to watch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infercloud.bench.peers.base import PeerError, log_tail

MARKER = "installed.json"


@dataclass(frozen=True)
class PipStep:
    """One pip call: `install` (with optional extra pip arguments and env) or `uninstall` of `packages`."""

    packages: tuple[str, ...]
    action: str = "install"                      # install | uninstall
    pip_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, python: Path) -> list[str]:
        if self.action == "uninstall":
            return [str(python), "-m", "pip", "uninstall", "-y", *self.packages]
        return [str(python), "-m", "pip", "install", *self.pip_args, *self.packages]


def venv_python(peer_dir: Path) -> Path:
    return peer_dir / "venv" / "bin" / "python"


def is_installed(peer_dir: Path) -> bool:
    return (peer_dir / MARKER).is_file()


def ensure_venv(peer_dir: Path, steps: list[PipStep], name: str) -> Path:
    """Create `peer_dir/venv` and run `steps` into it unless the marker says done; returns its python."""
    python = venv_python(peer_dir)
    if is_installed(peer_dir):
        return python
    peer_dir.mkdir(parents=True, exist_ok=True)
    log = peer_dir / "install.log"
    started = time.monotonic()
    if not python.is_file():
        run_logged([sys.executable, "-m", "venv", str(peer_dir / "venv")], {}, log, f"{name}: creating the virtualenv")
    for step in steps:
        what = " ".join(step.packages)
        run_logged(step.argv(python), step.env, log, f"{name}: pip {step.action} {what} failed")
    marker = {"steps": [[s.action, *s.packages] for s in steps], "install_s": round(time.monotonic() - started, 1),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (peer_dir / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    return python


def run_logged(argv: list[str], extra_env: dict[str, str], log: Path, failure: str) -> None:
    """Run `argv` with its output appended to `log`; PeerError(`failure` + log tail) when it fails."""
    with open(log, "ab") as out:
        out.write(f"\n==== {time.strftime('%H:%M:%S')} $ {' '.join(argv)}\n".encode())
        out.flush()
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, **extra_env})
    if code != 0:
        raise PeerError(f"{failure} (exit {code}); log {log}:\n{log_tail(log)}")
