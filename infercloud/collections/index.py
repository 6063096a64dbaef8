"""VectorIndex: the one interface a collection's vectors are searched through, and ExactIndex, its exact form.

Vectors are float32 rows of unit length, so the inner product is the cosine similarity (the score a search
returns, higher is closer). Keys are int64: the chunk rows' ids (store/schema.py `collection_chunks`). A search
may name `among`, the keys a metadata filter selected: only those can be returned. An implementation may be
approximate (collections/hnsw.py, the default) or a server store; ExactIndex scores every vector (numpy, one
matrix-vector product) and is the reference the approximate ones are measured against.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (float32 [n, dim], unit rows) under int64 keys not in the index."""

    def remove(self, keys: np.ndarray) -> None:
        """Remove these keys (unknown ones are ignored)."""

    def search(self, vector: np.ndarray, k: int, among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The (at most) k keys closest to `vector` and their scores, best first; only keys in `among` if given."""

    def __len__(self) -> int: ...


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The positions of the k highest scores, highest first (ties: lower position first)."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


class ExactIndex:
    """Every vector scored on each search: one dense matrix (rows appended; a removed row is filled by the
    last row), a key -> row map. Thread-safe: one lock around each call."""

    def __init__(self, dim: int, capacity: int = 1024):
        self.dim = dim
        self._vectors = np.zeros((capacity, dim), np.float32)
        self._keys = np.zeros(capacity, np.int64)
        self._row: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._row)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys = np.asarray(keys, np.int64)
        vectors = np.asarray(vectors, np.float32).reshape(len(keys), self.dim)
        with self._lock:
            new = keys.tolist()
            if len(set(new)) != len(new) or any(key in self._row for key in new):
                raise ValueError("a key is already in the index (or twice in the batch)")
            size = len(self._row)
            if size + len(new) > len(self._keys):
                self._grow(size + len(new))
            self._vectors[size:size + len(new)] = vectors
            self._keys[size:size + len(new)] = keys
            self._row.update(zip(new, range(size, size + len(new))))

    def remove(self, keys: np.ndarray) -> None:
        with self._lock:
            for key in np.asarray(keys, np.int64).tolist():
                row = self._row.pop(key, None)
                if row is None:
                    continue
                last = len(self._row)           # the last row moves into the hole
                if row != last:
                    self._vectors[row] = self._vectors[last]
                    self._keys[row] = self._keys[last]
                    self._row[int(self._keys[row])] = row

    def search(self, vector: np.ndarray, k: int, among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        vector = np.asarray(vector, np.float32).reshape(self.dim)
        with self._lock:
            if among is None:
                keys, scores = self._keys[:len(self._row)], self._vectors[:len(self._row)] @ vector
            else:
                rows = np.sort(np.fromiter((r for r in map(self._row.get, np.asarray(among, np.int64).tolist())
                                            if r is not None), np.int64))   # in memory order: faster to gather
                keys, scores = self._keys[rows], np.take(self._vectors, rows, axis=0) @ vector
            best = top_k(scores, k)
            return keys[best].copy(), scores[best].astype(np.float32)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of every key and its vector (what an approximate index is built from)."""
        with self._lock:
            return self._keys[:len(self._row)].copy(), self._vectors[:len(self._row)].copy()

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * len(self._keys))
        vectors = np.zeros((capacity, self.dim), np.float32)
        keys = np.zeros(capacity, np.int64)
        vectors[:len(self._keys)], keys[:len(self._keys)] = self._vectors, self._keys
        self._vectors, self._keys = vectors, keys
