"""The typed values of the collections room: the rows its store (collections/store.py) takes and returns, what
one write changed, and what a search answers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from infercloud.collections.chunking import Chunking


@dataclass(frozen=True)
class CollectionRow:
    id: int
    owner: str
    name: str
    embedding_model: str
    dimensions: int | None
    chunking: Chunking
    metadata: dict
    created_at: dt.datetime
    version: int
    num_documents: int
    num_chunks: int


@dataclass(frozen=True)
class DocumentRow:
    key: int                   # its row id
    id: str                    # the client's id
    text: str | None           # None where it was not read (listings)
    metadata: dict
    num_chunks: int
    created_at: dt.datetime


@dataclass(frozen=True)
class NewDocument:
    id: str
    text: str
    metadata: dict
    chunks: list[str]
    vectors: np.ndarray        # float32 [len(chunks), dim]


@dataclass(frozen=True)
class StoredDocument:
    key: int
    metadata: dict
    chunk_keys: np.ndarray     # int64, in chunk order
    vectors: np.ndarray


@dataclass(frozen=True)
class Written:
    """One write's effect, for the in-memory index: it moves that index from `version - 1` to `version`."""

    version: int
    documents: tuple[StoredDocument, ...] = ()
    removed_chunks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    removed_documents: tuple[int, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """All a collection's vectors and document metadata, to build its index from; `version` is read first, so
    the data is at least that new."""

    version: int
    dim: int | None
    chunk_keys: np.ndarray
    chunk_documents: np.ndarray
    vectors: np.ndarray
    metadata: dict[int, dict]


@dataclass(frozen=True)
class ChunkRow:
    key: int
    document_key: int
    document_id: str
    chunk_index: int
    text: str
    metadata: dict


@dataclass(frozen=True)
class Hit:
    document_id: str
    chunk_index: int
    text: str
    score: float               # cosine similarity to the query
    metadata: dict

    def to_json(self) -> dict:
        return {"object": "collection.search_result", "document_id": self.document_id,
                "chunk_index": self.chunk_index, "text": self.text, "score": self.score, "metadata": self.metadata}


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    prompt_tokens: int         # the query's embedding tokens (0 for search_by_vector)
