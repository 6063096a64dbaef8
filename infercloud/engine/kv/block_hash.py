"""Chained block hashes: the prefix-cache key of a full KV block, stable across processes.

hash(block i) = sha256(hash(block i-1) || len(salt) || salt || token ids of block i), truncated to 16
bytes; the first block's parent is 16 zero bytes.
Chaining makes a block's key depend on every token before it, so equal keys mean equal prefixes.
The salt (per tenant, say) keeps one tenant's blocks invisible to another's. The router uses the
same function on prompts, so its keys match the workers' caches.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

BlockHash = bytes


def hash_block_tokens(parent: BlockHash | None, token_ids: Sequence[int], salt: str | None = None) -> BlockHash:
    h = hashlib.sha256(parent or bytes(16))
    salt_bytes = salt.encode() if salt else b""
    h.update(len(salt_bytes).to_bytes(4, "little") + salt_bytes)
    h.update(array("q", token_ids).tobytes())
    return h.digest()[:16]


def hash_token_blocks(token_ids: Sequence[int], block_size: int, salt: str | None = None,
                      start: list[BlockHash] | None = None) -> list[BlockHash]:
    """Hashes of every full block of `token_ids`; `start` are hashes already known for its first blocks."""
    hashes = list(start or [])
    for begin in range(len(hashes) * block_size, len(token_ids) - block_size + 1, block_size):
        parent = hashes[-1] if hashes else None
        hashes.append(hash_block_tokens(parent, token_ids[begin:begin + block_size], salt))
    return hashes
