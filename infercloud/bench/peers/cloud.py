"""The "cloud" peer: infercloud's gateway with its workers (`infercloud serve` with a `cluster` section).

The config mapping is written to `<peer dir>/cloud.yaml` at start; the gateway answers /v1/models
only once every model with native replicas has a ready one, so start() returns a usable cloud.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from infercloud.bench.peers.base import Peer
from infercloud.bench.peers.infercloud_peer import serve_command


class CloudPeer(Peer):
    name = "cloud"
    supports_vllm_extras = True

    def __init__(self, config: dict[str, Any], home: Path | None = None) -> None:
        super().__init__(home)
        self.config = dict(config)

    @property
    def served_model(self) -> str:
        return self.config["models"][0]["name"]

    def command(self, port: int) -> list[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "cloud.yaml"
        path.write_text(yaml.safe_dump({**self.config, "host": "127.0.0.1", "port": port}, sort_keys=False))
        return serve_command(sys.executable, path)
