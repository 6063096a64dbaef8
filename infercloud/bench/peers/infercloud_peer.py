"""The "infercloud" peer: infercloud itself via `python -m infercloud serve --config`, so compare treats all alike.

It serves only the chat model (no embedding model to load or pull), with the engine options
given as a plain mapping of EngineConfig fields (e.g. {"max_num_seqs": 64}); everything not
given keeps infercloud's defaults. The config is written to `<peer dir>/serve.yaml` at start.
It runs in infercloud's own venv: nothing to install.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from infercloud.bench.peers.base import Peer

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
