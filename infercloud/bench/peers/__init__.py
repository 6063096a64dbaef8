"""The systems `bench compare` runs side by side: `get_peer(name)` builds one (see base.Peer for the contract).

Peers that need their own virtualenv or build (llamacpp, llamacpp-server, vllm) install on the
first `install()` or `start()` into `infercloud_home()/peers/<name>/`, never during set-up or CI.
"""

from __future__ import annotations

from typing import Any

import yaml

from infercloud.bench.peers.base import Peer, PeerError

PEER_NAMES = ("infercloud", "hf-naive", "hf-static", "llamacpp", "vllm")
EXTRA_PEER_NAMES = ("llamacpp-server",   # llama.cpp's C++ server: parallel slots, continuous batching
                    "infercloud@COMMIT")  # infercloud at an earlier commit: the pinned reference

__all__ = ["EXTRA_PEER_NAMES", "PEER_NAMES", "Peer", "PeerError", "get_peer"]


def get_peer(name: str, **options: Any) -> Peer:
    """The peer called `name`, built with `options` (its constructor's keyword arguments).

    A name may carry settings after a colon, `key=value` pairs joined by commas: engine fields for infercloud
    (`infercloud:quantization=int8`), the dtype for vLLM (`vllm:dtype=bfloat16`).
    """
    name, _, settings = name.partition(":")
    if settings:
        pairs = {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in settings.split(",")
                                                               if "=" in pair)}   # "2048" -> 2048
        if name.startswith("infercloud"):
            options["engine"] = {**options.get("engine", {}), **pairs}
        else:
            options.update(pairs)
    if name == "infercloud":
        from infercloud.bench.peers.infercloud_peer import InfercloudPeer
        return InfercloudPeer(**options)
    if name.startswith("infercloud@") and len(name) > len("infercloud@"):
        from infercloud.bench.peers.infercloud_peer import InfercloudRefPeer
        return InfercloudRefPeer(name.removeprefix("infercloud@"), **options)
    if name in ("hf-naive", "hf-static"):
        from infercloud.bench.peers.hf import HFPeer
        return HFPeer(mode=name.removeprefix("hf-"), **options)
    if name == "llamacpp":
        from infercloud.bench.peers.llamacpp import LlamaCppPeer
        return LlamaCppPeer(**options)
    if name == "llamacpp-server":
        from infercloud.bench.peers.llamacpp_server import LlamaCppServerPeer
        return LlamaCppServerPeer(**options)
    if name == "vllm":
        from infercloud.bench.peers.vllm import VllmPeer
        return VllmPeer(**options)
    raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES + EXTRA_PEER_NAMES)}")
