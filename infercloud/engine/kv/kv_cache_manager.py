"""KVCacheManager: gives each request the blocks its tokens need, reusing cached prefix blocks.

The scheduler asks two things: `get_computed_blocks(req)` (the longest cached prefix of a new
request, as whole blocks) and `allocate_slots(req, n, computed)` (room for n more tokens, or None
when the pool cannot supply it — the scheduler then preempts or waits). After a step computes a
request's tokens, every block it filled is registered under its chained hash so later requests can
hit it. `free(req)` returns a request's blocks, tail first, so a prefix's last blocks are evicted
before its first ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.engine.kv.block_pool import BlockPool, KVBlock
from infercloud.engine.request import Request


@dataclass
class PrefixCacheStats:
    queried_tokens: int = 0
    hit_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks, enable_caching=enable_prefix_caching)
        self.stats = PrefixCacheStats()
        self._blocks: dict[str, list[KVBlock]] = {}
        self._num_registered: dict[str, int] = {}

    # -- queries ---------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def num_used_blocks(self) -> int:
        return self.pool.num_blocks - self.pool.num_free_blocks

    def block_ids(self, req: Request) -> list[int]:
        return [b.block_id for b in self._blocks.get(req.request_id, ())]

    def _update_hashes(self, req: Request) -> None:
        if len(req.block_hashes) < req.num_tokens // self.block_size:
            req.block_hashes = hash_token_blocks(req.all_token_ids, self.block_size, req.cache_salt,
                                                 start=req.block_hashes)

    def get_computed_blocks(self, req: Request) -> list[KVBlock]:
        """Longest run of cached blocks matching the request's prefix; at least one token stays to compute."""
        if not self.enable_prefix_caching:
            return []
        self._update_hashes(req)
        max_blocks = (req.num_tokens - 1) // self.block_size
        hits: list[KVBlock] = []
        for block_hash in req.block_hashes[:max_blocks]:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def record_prefix_lookup(self, req: Request, num_hit_tokens: int) -> None:
        """Count one admitted request's prefix lookup (called once, when it is actually scheduled)."""
        if not self.enable_prefix_caching:
            return
        self.stats.queried_tokens += req.num_tokens
        self.stats.hit_tokens += num_hit_tokens

    # -- allocation ------------------------------------------------------------------------------
    def allocate_slots(self, req: Request, num_new_tokens: int,
                       computed_blocks: list[KVBlock] | None = None) -> list[KVBlock] | None:
        computed_blocks = computed_blocks or []
        blocks = self._blocks.setdefault(req.request_id, [])
        num_computed = req.num_computed_tokens + len(computed_blocks) * self.block_size
        num_needed = -(-(num_computed + num_new_tokens) // self.block_size)
        num_new_blocks = max(0, num_needed - len(blocks) - len(computed_blocks))
        num_evictable_hits = sum(1 for b in computed_blocks if b.ref_cnt == 0)
        if num_new_blocks > self.pool.num_free_blocks - num_evictable_hits:
            return None
        self.pool.touch(computed_blocks)
        blocks.extend(computed_blocks)
        if computed_blocks:
            self._num_registered[req.request_id] = len(blocks)
        new_blocks = self.pool.get_new_blocks(num_new_blocks)
        blocks.extend(new_blocks)
        return new_blocks

    def cache_full_blocks(self, req: Request, num_computed_tokens: int) -> None:
        """Register the request's blocks that are full once `num_computed_tokens` tokens are computed."""
        if not self.enable_prefix_caching:
            return
        blocks = self._blocks.get(req.request_id, [])
        num_full = min(num_computed_tokens // self.block_size, len(blocks))
        start = self._num_registered.get(req.request_id, 0)
        if num_full <= start:
            return
        self._update_hashes(req)
        for i in range(start, num_full):
            self.pool.cache_block(blocks[i], req.block_hashes[i])
        self._num_registered[req.request_id] = num_full

    def free(self, req: Request) -> None:
        blocks = self._blocks.pop(req.request_id, [])
        self._num_registered.pop(req.request_id, None)
        self.pool.free_blocks(list(reversed(blocks)))

    def recent_block_hashes(self, limit: int) -> list[str]:
        """Hex keys of the most recently cached blocks (what a prefix-aware router can aim for)."""
        return [h.hex() for h in self.pool.recent_hashes(limit)]

    def reset_prefix_cache(self) -> None:
        self.pool.reset_prefix_cache()
