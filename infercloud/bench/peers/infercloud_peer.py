"""The "infercloud" peer: infercloud itself via `python -m infercloud serve --config`, so compare treats all alike.

It serves only the chat model (no embedding model to load or pull), with the engine options
given as a plain mapping of EngineConfig fields (e.g. {"max_num_seqs": 64}); everything not
given keeps infercloud's defaults. The config is written to `<peer dir>/serve.yaml` at start.
It runs in infercloud's own venv: nothing to install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from infercloud.bench.peers.base import Peer, PeerError

DEFAULT_MODEL = "smollm2-135m-instruct"


def serve_config(model: str, port: int, engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `infercloud serve` config mapping for one chat model on 127.0.0.1:port."""
    spec: dict[str, Any] = {"name": model, "kind": "chat"}
    if engine:
        spec["engine"] = dict(engine)
    return {"host": "127.0.0.1", "port": port, "models": [spec]}


def serve_command(python: str, config_path: Path) -> list[str]:
    return [python, "-m", "infercloud", "serve", "--config", str(config_path)]


class InfercloudPeer(Peer):
    name = "infercloud"
    supports_vllm_extras = True   # ignore_eos, min_tokens, top_k, ... as in vLLM

    def __init__(self, model: str = DEFAULT_MODEL, engine: dict[str, Any] | None = None,
                 home: Path | None = None) -> None:
        super().__init__(home)
        self.model = model
        self.engine = dict(engine or {})

    @property
    def served_model(self) -> str:
        return self.model

    @property
    def config_path(self) -> Path:
        return self.dir / "serve.yaml"

    def command(self, port: int) -> list[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(serve_config(self.model, port, self.engine), sort_keys=False))
        return serve_command(sys.executable, self.config_path)


class InfercloudRefPeer(InfercloudPeer):
    """infercloud at an earlier commit (`infercloud@<commit>`), from a git worktree of this checkout, served
    the same way: run beside `infercloud` in one `bench compare`, it shows speed lost or won since then on
    the same box in the same session (numbers from another day or box cannot)."""

    def __init__(self, commit: str, **options: Any) -> None:
        self.commit = commit
        self.name = f"infercloud@{commit}"
        super().__init__(**options)

    @property
    def source_dir(self) -> Path:
        return self.dir / "src"

    def install(self) -> None:
        """Check the commit out into the peer's folder (once; again when the folder holds another)."""
        repo = Path(__file__).resolve().parents[3]
        if not (repo / ".git").exists():
            raise PeerError(f"{self.name}: needs a git checkout of infercloud (found none at {repo})")
        want = _git(repo, "rev-parse", f"{self.commit}^{{commit}}")
        if (self.source_dir / "infercloud").is_dir() and _git(self.source_dir, "rev-parse", "HEAD") == want:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _git(repo, "worktree", "prune")
        if self.source_dir.exists():
            _git(repo, "worktree", "remove", "--force", str(self.source_dir))
        _git(repo, "worktree", "add", "--force", "--detach", str(self.source_dir), want)

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.source_dir)}   # its own code ahead of this checkout's (same venv)


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise PeerError(f"git {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()
