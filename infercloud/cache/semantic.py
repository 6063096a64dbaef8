"""The semantic cache: replies found by the similarity of the last user turn, within one group of entries;
the SemanticCache interface and MemorySemanticCache (in-process, numpy).

Algorithm. Entries are grouped by (namespace, model, context_hash) (cache/keys.py): a lookup compares only
with the entries of its own group, so another tenant, model, history or setting never hits. Each entry is
a unit float32 vector (the embedding of the user turn) and a reply. `lookup` stacks the live vectors of
the group, takes their dot products with the query's unit vector (cosine similarity) and returns the
best entry when its similarity is at least `threshold`, else None. Vectors of another dimension (the
embedding model changed) are never compared.
Bounds: each entry lives `ttl_s` (injected clock); each model keeps at most `max_entries` entries over all
its groups, the oldest put first evicted (FIFO: a hit does not renew an entry). Expired entries are dropped
when their group is looked up or when they are the oldest of their model.
RedisSemanticCache (semantic_redis.py) keeps the same groups in Redis.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from infercloud.cache.store import CachedReply

GroupKey = tuple[str, str, str]          # (namespace, model, context_hash)


@dataclass(frozen=True)
class SemanticMatch:
    reply: CachedReply
    similarity: float


def unit_vector(vector: np.ndarray) -> np.ndarray:
    """A 1-D float32 copy of unit length (a [1, dim] row is taken as its row); ValueError for a zero,
    empty or non-finite vector."""
    flat = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(flat)) if flat.size else 0.0
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError("a semantic cache vector must be finite and non-zero")
    return flat / np.float32(norm)


def ranked(vectors: list[np.ndarray], query: np.ndarray, threshold: float) -> list[tuple[int, float]]:
    """(index, similarity) of the vectors at least `threshold` similar to `query`, best first (vectors of
    another dimension are skipped)."""
    same = [i for i, v in enumerate(vectors) if v.shape == query.shape]
    if not same:
        return []
    similarities = np.stack([vectors[i] for i in same]) @ query
    order = np.argsort(-similarities, kind="stable")
    return [(same[k], float(similarities[k])) for k in order if similarities[k] >= threshold]


class SemanticCache(Protocol):
    """Where semantic-cache entries live (in-process or Redis)."""

    async def lookup(self, namespace: str, model: str, context_hash: str, vector: np.ndarray,
                     threshold: float) -> SemanticMatch | None: ...

    async def put(self, namespace: str, model: str, context_hash: str, vector: np.ndarray, reply: CachedReply,
                  ttl_s: float, max_entries: int) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class _Entry:
    vector: np.ndarray
    reply: CachedReply
    expires_at: float


class MemorySemanticCache:
    """This process's semantic-cache entries, grouped; the oldest of a model evicted past its max_entries."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._groups: dict[GroupKey, dict[int, _Entry]] = {}
        self._order: dict[str, OrderedDict[int, GroupKey]] = {}   # model -> entry id -> its group, oldest first
        self._ids = itertools.count()

    def num_entries(self, model: str) -> int:
        return len(self._order.get(model, ()))

    async def lookup(self, namespace: str, model: str, context_hash: str, vector: np.ndarray,
                     threshold: float) -> SemanticMatch | None:
        group_key = (namespace, model, context_hash)
        group = self._groups.get(group_key)
        if not group:
            return None
        now = self.clock()
        for entry_id in [i for i, e in group.items() if now >= e.expires_at]:
            self._drop(group_key, entry_id)
        entries = list(group.values())
        best = ranked([e.vector for e in entries], unit_vector(vector), threshold)
        if not best:
            return None
        index, similarity = best[0]
        return SemanticMatch(entries[index].reply, similarity)

    async def put(self, namespace: str, model: str, context_hash: str, vector: np.ndarray, reply: CachedReply,
                  ttl_s: float, max_entries: int) -> None:
        group_key = (namespace, model, context_hash)
        entry_id = next(self._ids)
        self._groups.setdefault(group_key, {})[entry_id] = _Entry(unit_vector(vector), reply, self.clock() + ttl_s)
        order = self._order.setdefault(model, OrderedDict())
        order[entry_id] = group_key
        while len(order) > max_entries:
            oldest, oldest_group = next(iter(order.items()))
            self._drop(oldest_group, oldest)

    def _drop(self, group_key: GroupKey, entry_id: int) -> None:
        group = self._groups.get(group_key, {})
        group.pop(entry_id, None)
        if not group:
            self._groups.pop(group_key, None)
        order = self._order.get(group_key[1])
        if order is not None:
            order.pop(entry_id, None)
            if not order:
                del self._order[group_key[1]]

    async def close(self) -> None:
        self._groups.clear()
        self._order.clear()
