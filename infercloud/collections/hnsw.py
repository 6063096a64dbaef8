"""HnswIndex: the default VectorIndex: usearch's HNSW graph for a large collection, exact search otherwise.

Algorithm (k = the number of results asked for, n = the vectors held):
- Every vector is kept in an ExactIndex (collections/index.py). Below `exact_below` vectors (5,000) it answers
  every search: numpy scores 5,000 x 384 in well under a millisecond, and the answer is exact.
- When n reaches `exact_below`, an HNSW graph (usearch; inner product on unit vectors, which is the cosine;
  connectivity 16, expansion 128 when adding and 64 when searching) is built off the request path, on a thread
  of its own; until it is ready, searches stay exact (7.8 ms at 100k x 384). Writes made while it is built are
  kept in order and replayed onto it before it answers. From then on each write goes to both.
- A filtered search (`among`: the keys a metadata filter selected): exact over those vectors when they are at
  most `exact_below`; else the graph is asked for more than k (k x n / |among| x 2, at least 4k, at most
  1,024) and its answer filtered; when fewer than k survive, exact over the selected vectors after all.
  An unfiltered graph search that returns fewer than min(k, n) (deleted nodes crowd a neighbourhood) is
  answered exactly too.

Why usearch: measured on this 2-core box at 100k x 384 clustered unit vectors, k=10: numpy exact p50 7.8 ms;
usearch HNSW p50 0.30 ms, recall@10 0.995, build 28 s; faiss-cpu HNSW p50 0.16 ms, recall 1.0, but its HNSW
cannot delete vectors (an upserted or deleted document must leave the index); sqlite-vec would sit beside the
SQLite file, but cannot load here (this Python's sqlite3 has no enable_load_extension), and would not serve
PostgreSQL. docs/benchmarks.md has the numbers of bench/vector_index.py.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from typing import TYPE_CHECKING

import numpy as np

from infercloud.collections.index import ExactIndex

if TYPE_CHECKING:
    from usearch.index import Index

log = logging.getLogger("infercloud.collections")

EXACT_BELOW = 5000
MAX_OVERFETCH = 1024
OVERFETCH = 2                       # a filtered graph search asks for k x (n / selected) x this
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 64

StartBuild = Callable[[Callable[[], None]], None]   # runs the graph's build (default: on a thread of its own)


def build_on_thread(build: Callable[[], None]) -> None:
    threading.Thread(target=build, name="hnsw-build", daemon=True).start()


def build_inline(build: Callable[[], None]) -> None:
    build()


def new_graph(dim: int, expansion_search: int = EXPANSION_SEARCH) -> Index:
    # usearch is imported here, when a collection first needs a graph, never at a server's import: loaded
    # before torch, its C++ runtime breaks xgrammar's parsing of decimal numbers ("invalid json schema: stod"
    # for a schema's `"maximum": 2.5`; tests/test_import_order.py)
    from usearch.index import Index

    return Index(ndim=dim, metric="ip", dtype="f32", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                 expansion_search=expansion_search)


class HnswIndex:
    def __init__(self, dim: int, exact_below: int = EXACT_BELOW, start_build: StartBuild = build_on_thread):
        self.dim = dim
        self.exact_below = exact_below
        self.start_build = start_build
        self.exact = ExactIndex(dim)
        self._graph: Index | None = None
        self._pending: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None   # writes during a build
        self._lock = threading.Lock()
        self._expansion_search = EXPANSION_SEARCH

    def __len__(self) -> int:
        return len(self.exact)

    @property
    def has_graph(self) -> bool:
        return self._graph is not None

    @property
    def expansion_search(self) -> int:
        """How many candidates a graph search keeps (more: higher recall, slower)."""
        return self._expansion_search

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        with self._lock:
            self._expansion_search = value
            if self._graph is not None:
                self._graph.expansion_search = value

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys, vectors = np.asarray(keys, np.int64), np.asarray(vectors, np.float32).reshape(-1, self.dim)
        snapshot = None
        with self._lock:
            self.exact.add(keys, vectors)
            if self._graph is not None:
                self._graph.add(keys, vectors)
            elif self._pending is not None:
                self._pending.append(("add", keys, vectors))
            elif len(self.exact) >= self.exact_below:
                self._pending = []
                snapshot = self.exact.vectors()
        if snapshot is not None:
            self.start_build(lambda: self._build(*snapshot))

    def remove(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, np.int64)
        with self._lock:
            self.exact.remove(keys)
            if self._graph is not None:
                self._remove_from_graph(self._graph, keys)
            elif self._pending is not None:
                self._pending.append(("remove", keys, None))

    def search(self, vector: np.ndarray, k: int, among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        vector = np.asarray(vector, np.float32).reshape(self.dim)
        n = len(self.exact)
        if self._graph is None or n <= k or (among is not None and len(among) <= self.exact_below):
            return self.exact.search(vector, k, among)
        if among is None:
            keys, scores = self._graph_search(vector, k)
            return (keys, scores) if len(keys) >= min(k, n) else self.exact.search(vector, k)
        among = np.asarray(among, np.int64)
        fetch = min(n, MAX_OVERFETCH, max(4 * k, math.ceil(OVERFETCH * k * n / max(len(among), 1))))
        keys, scores = self._graph_search(vector, fetch)
        kept = np.isin(keys, among)
        if kept.sum() >= k:
            return keys[kept][:k], scores[kept][:k]
        return self.exact.search(vector, k, among)

    def _graph_search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            found = self._graph.search(vector, k)
        return found.keys.astype(np.int64), (1.0 - found.distances).astype(np.float32)

    def _build(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Build the graph from a snapshot, replay the writes made meanwhile, then let it answer."""
        try:
            graph = new_graph(self.dim, self._expansion_search)
            graph.add(keys, vectors)
        except Exception:   # noqa: BLE001 - searches stay exact; the next write past the threshold retries
            log.exception("building the HNSW graph of %d vectors failed", len(keys))
            with self._lock:
                self._pending = None
            return
        with self._lock:
            for op, op_keys, op_vectors in self._pending or []:
                if op == "add":
                    graph.add(op_keys, op_vectors)
                else:
                    self._remove_from_graph(graph, op_keys)
            self._pending = None
            self._graph = graph

    @staticmethod
    def _remove_from_graph(graph: Index, keys: np.ndarray) -> None:
        present = [key for key in keys.tolist() if key in graph]
        if present:
            graph.remove(np.asarray(present, np.int64))
