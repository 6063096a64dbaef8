"""prefix_aware: send a prompt where its longest prefix is already cached, unless that replica is loaded.

Algorithm: the gateway hashes the prompt into the engine's chained block hashes (block_hash.py), so
hash i stands for the whole prefix up to block i. A replica's match length is the number of leading
prompt hashes found in its known cache (the hashes its /internal/state reports plus those of prompts
recently routed to it). The replica with the longest match wins (ties: fewer outstanding tokens).
Fall back to least_load when no replica matches a single block, or when the winner's outstanding
tokens exceed the least loaded replica's by more than `margin_tokens` (default 4096: about four W5
requests that miss the cache, or sixty that hit it) and by more than `margin_ratio` (default 1.5x): a
warm cache is not worth a long queue.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from infercloud.router.base import ReplicaView, RouteRequest
from infercloud.router.least_load import LeastLoad, load_key


def match_length(prompt_hashes: Sequence[bytes], cached: Container[bytes]) -> int:
    """How many leading blocks of the prompt the replica holds (the chain stops at the first miss)."""
    n = 0
    for h in prompt_hashes:
        if h not in cached:
            break
        n += 1
    return n


class PrefixAware:
    name = "prefix_aware"

    def __init__(self, fallback: LeastLoad, margin_tokens: int = 4096, margin_ratio: float = 1.5) -> None:
        self.fallback = fallback
        self.margin_tokens = margin_tokens
        self.margin_ratio = margin_ratio

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        if not replicas:
            return None
        scored = [(match_length(request.prompt_block_hashes, r.cached_block_hashes), r) for r in replicas]
        best_len = max(n for n, _ in scored)
        if best_len == 0:
            return self.fallback.choose(request, replicas)
        best = min((r for n, r in scored if n == best_len), key=load_key)
        least = min(replicas, key=load_key)
        excess = best.outstanding_tokens - least.outstanding_tokens
        if excess > self.margin_tokens and best.outstanding_tokens > self.margin_ratio * least.outstanding_tokens:
            return self.fallback.choose(request, replicas)
        return best
