"""LiveCollection: one collection's searchable state in memory, and LiveCollections, those a process holds.

A LiveCollection is its vector index (any VectorIndex; HnswIndex by default), which document each chunk
belongs to, and the documents' metadata (filters.MetadataIndex); it is built from a store Snapshot and then
moved forward by each write of this process (`apply`), and it carries the collection row's `version` it
reflects. LiveCollections keeps them by collection id, least recently used first; past `max_bytes` of vectors
the least recently used are dropped (and rebuilt from SQL when next searched). Methods block (index work):
call them on a thread. The maps are guarded by one lock; the index guards itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np

from infercloud.collections.filters import MetadataFilter, MetadataIndex
from infercloud.collections.hnsw import HnswIndex
from infercloud.collections.index import VectorIndex
from infercloud.collections.rows import Snapshot, Written

MakeIndex = Callable[[int], VectorIndex]   # dim -> an empty index
DEFAULT_MAX_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Match:
    chunk_key: int
    document_key: int
    score: float


class LiveCollection:
    def __init__(self, snapshot: Snapshot, make_index: MakeIndex = HnswIndex):
        self.version = snapshot.version
        self.make_index = make_index
        self.index: VectorIndex | None = None
        self.dim: int | None = None
        self.chunk_document: dict[int, int] = {}
        self.document_chunks: dict[int, list[int]] = {}
        self.metadata = MetadataIndex()
        self._lock = threading.Lock()
        for key, meta in snapshot.metadata.items():
            self.metadata.put(key, meta)
            self.document_chunks[key] = []
        for chunk, document in zip(snapshot.chunk_keys.tolist(), snapshot.chunk_documents.tolist()):
            self.chunk_document[chunk] = document
            self.document_chunks.setdefault(document, []).append(chunk)
        if len(snapshot.chunk_keys):
            self._index(snapshot.vectors.shape[1]).add(snapshot.chunk_keys, snapshot.vectors)

    @property
    def nbytes(self) -> int:
        return 0 if self.index is None else len(self.index) * (self.dim or 0) * 4

    def apply(self, written: Written) -> None:
        """Move to `written.version`: its chunks removed, its documents (new or replaced) added."""
        with self._lock:
            for chunk in written.removed_chunks.tolist():
                self.chunk_document.pop(chunk, None)
            for document in written.removed_documents:
                self.metadata.remove(document)
                self.document_chunks.pop(document, None)
            for doc in written.documents:
                self.metadata.put(doc.key, doc.metadata)
                self.document_chunks[doc.key] = doc.chunk_keys.tolist()
                self.chunk_document.update(dict.fromkeys(doc.chunk_keys.tolist(), doc.key))
        if self.index is not None and len(written.removed_chunks):
            self.index.remove(written.removed_chunks)
        added = [d for d in written.documents if len(d.chunk_keys)]
        if added:
            self._index(added[0].vectors.shape[1]).add(np.concatenate([d.chunk_keys for d in added]),
                                                       np.concatenate([d.vectors for d in added]))
        self.version = written.version

    def search(self, vector: np.ndarray, k: int, where: MetadataFilter | None = None,
               unique_documents: bool = False) -> list[Match]:
        """The k best chunks (cosine), only of documents matching `where`; with `unique_documents`, the best
        chunk of each of the k best documents."""
        if self.index is None:
            return []
        among = self._select(where)
        total = len(self.index) if among is None else len(among)
        if total == 0:
            return []
        fetch = min(total, 4 * k) if unique_documents else k
        while True:
            keys, scores = self.index.search(vector, fetch, among)
            matches, seen = [], set()
            with self._lock:
                for key, score in zip(keys.tolist(), scores.tolist()):
                    document = self.chunk_document.get(key)
                    if document is None or (unique_documents and document in seen):
                        continue
                    seen.add(document)
                    matches.append(Match(key, document, score))
            if len(matches) >= k or fetch >= total:
                return matches[:k]
            fetch = min(total, 4 * fetch)

    def _select(self, where: MetadataFilter | None) -> np.ndarray | None:
        if where is None or not where.conditions:
            return None
        with self._lock:
            documents = self.metadata.select(where)
            return np.fromiter(chain.from_iterable(self.document_chunks.get(d, ()) for d in documents), np.int64)

    def _index(self, dim: int) -> VectorIndex:
        if self.index is None:
            self.index, self.dim = self.make_index(dim), dim
        return self.index


class LiveCollections:
    """Collection id -> its LiveCollection, least recently used first, at most `max_bytes` of vectors."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._held: OrderedDict[int, LiveCollection] = OrderedDict()

    def get(self, collection_id: int) -> LiveCollection | None:
        live = self._held.get(collection_id)
        if live is not None:
            self._held.move_to_end(collection_id)
        return live

    def put(self, collection_id: int, live: LiveCollection) -> None:
        self._held[collection_id] = live
        self._held.move_to_end(collection_id)
        self.trim(keep=collection_id)

    def drop(self, collection_id: int) -> None:
        self._held.pop(collection_id, None)

    def trim(self, keep: int | None = None) -> None:
        """Drop the least recently used until the vectors held fit `max_bytes` (never `keep`)."""
        total = sum(live.nbytes for live in self._held.values())
        for collection_id in list(self._held):
            if total <= self.max_bytes:
                return
            if collection_id != keep:
                total -= self._held.pop(collection_id).nbytes
