"""CollectionStore: collections, their documents and chunks (with their vectors) in SQL, each of one owner.

Tables `collections`, `collection_documents` and `collection_chunks` of store/schema.py. An owner is a tenant
(`tenant:<id>`) or, without tenancy, `open`; a collection is found by (owner, name) only, so another owner's
collection is exactly as unknown as a missing one. Every write to a collection's documents runs in one
transaction that also adds 1 to the collection's `version` and recounts its documents and chunks; the
in-memory index of a process (collections/live.py) carries the version it reflects, so a process that sees
a newer version in the row knows another process wrote and rebuilds from `snapshot`. Vectors are stored as
float32 bytes. The calls block: the service runs them in a thread.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import sqlalchemy as sa

from infercloud.collections.chunking import Chunking
from infercloud.collections.rows import (ChunkRow, CollectionRow, DocumentRow, NewDocument, Snapshot, StoredDocument,
                                         Written)
from infercloud.store.schema import collection_chunks as chunks_t
from infercloud.store.schema import collection_documents as docs_t
from infercloud.store.schema import collections as collections_t


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class CollectionStore:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    # -- collections ---------------------------------------------------------------------------------
    def create(self, owner: str, name: str, embedding_model: str, chunking: Chunking, metadata: dict,
               now: dt.datetime) -> CollectionRow:
        """A new collection; sa.exc.IntegrityError when the owner has one by that name."""
        values = dict(owner=owner, name=name, embedding_model=embedding_model, dimensions=None,
                      chunking=chunking.to_json(), metadata=metadata, created_at=now, version=0, num_documents=0,
                      num_chunks=0)
        with self.engine.begin() as conn:
            key = conn.execute(collections_t.insert().values(**values)).inserted_primary_key[0]
        return _collection({**values, "id": key})

    def get(self, owner: str, name: str) -> CollectionRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(collections_t).where(collections_t.c.owner == owner,
                                                              collections_t.c.name == name)).first()
        return None if row is None else _collection(row._mapping)

    def list(self, owner: str) -> list[CollectionRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(collections_t).where(collections_t.c.owner == owner)
                                .order_by(collections_t.c.id)).all()
        return [_collection(row._mapping) for row in rows]

    def delete(self, owner: str, name: str) -> int | None:
        """Delete a collection with its documents and chunks; its id, or None when there is none."""
        with self.engine.begin() as conn:
            key = conn.execute(sa.select(collections_t.c.id).where(collections_t.c.owner == owner,
                                                                   collections_t.c.name == name)).scalar()
            if key is None:
                return None
            conn.execute(chunks_t.delete().where(chunks_t.c.collection_id == key))
            conn.execute(docs_t.delete().where(docs_t.c.collection_id == key))
            conn.execute(collections_t.delete().where(collections_t.c.id == key))
        return key

    # -- documents -----------------------------------------------------------------------------------
    def put_documents(self, collection: CollectionRow, documents: list[NewDocument],
                      now: dt.datetime) -> Written | None:
        """Insert the documents, replacing those whose id exists (the row is kept, its chunks replaced); None
        when the collection is gone."""
        with self.engine.begin() as conn:
            if not self._bump(conn, collection.id):
                return None
            existing = dict(conn.execute(sa.select(docs_t.c.doc_id, docs_t.c.id).where(
                docs_t.c.collection_id == collection.id, docs_t.c.doc_id.in_([d.id for d in documents]))).all())
            removed = self._delete_chunks(conn, list(existing.values()))
            stored = []
            for doc in documents:
                values = dict(text=doc.text, metadata=doc.metadata, num_chunks=len(doc.chunks), created_at=now)
                if doc.id in existing:
                    key = existing[doc.id]
                    conn.execute(docs_t.update().where(docs_t.c.id == key).values(**values))
                else:
                    key = conn.execute(docs_t.insert().values(collection_id=collection.id, doc_id=doc.id,
                                                              **values)).inserted_primary_key[0]
                stored.append(StoredDocument(key, doc.metadata, self._insert_chunks(conn, collection.id, key, doc),
                                             doc.vectors))
            dims = {d.vectors.shape[1] for d in documents if len(d.chunks)}
            version = self._recount(conn, collection.id, dims.pop() if dims else None)
        return Written(version, tuple(stored), removed)

    def delete_document(self, collection: CollectionRow, doc_id: str) -> Written | None:
        with self.engine.begin() as conn:
            key = conn.execute(sa.select(docs_t.c.id).where(docs_t.c.collection_id == collection.id,
                                                            docs_t.c.doc_id == doc_id)).scalar()
            if key is None:
                return None
            self._bump(conn, collection.id)
            removed = self._delete_chunks(conn, [key])
            conn.execute(docs_t.delete().where(docs_t.c.id == key))
            version = self._recount(conn, collection.id, None)
        return Written(version, removed_chunks=removed, removed_documents=(key,))

    def get_document(self, collection: CollectionRow, doc_id: str) -> DocumentRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(docs_t).where(docs_t.c.collection_id == collection.id,
                                                       docs_t.c.doc_id == doc_id)).first()
        return None if row is None else _document(row._mapping, with_text=True)

    def list_documents(self, collection: CollectionRow, limit: int, after: str | None,
                       descending: bool) -> tuple[list[DocumentRow], bool] | None:
        """A page of documents in the order they were first added (or its reverse), after the document `after`;
        and whether more follow. None when `after` is not a document of the collection."""
        columns = [c for c in docs_t.c if c.name != "text"]
        query = sa.select(*columns).where(docs_t.c.collection_id == collection.id)
        with self.engine.connect() as conn:
            if after is not None:
                start = conn.execute(sa.select(docs_t.c.id).where(docs_t.c.collection_id == collection.id,
                                                                  docs_t.c.doc_id == after)).scalar()
                if start is None:
                    return None
                query = query.where(docs_t.c.id < start if descending else docs_t.c.id > start)
            order = docs_t.c.id.desc() if descending else docs_t.c.id
            rows = conn.execute(query.order_by(order).limit(limit + 1)).all()
        return [_document(r._mapping, with_text=False) for r in rows[:limit]], len(rows) > limit

    # -- vectors -------------------------------------------------------------------------------------
    def snapshot(self, collection_id: int) -> Snapshot:
        with self.engine.connect() as conn:
            version, dim = conn.execute(sa.select(collections_t.c.version, collections_t.c.dimensions)
                                        .where(collections_t.c.id == collection_id)).one()
            rows = conn.execute(sa.select(chunks_t.c.id, chunks_t.c.document_id, chunks_t.c.embedding)
                                .where(chunks_t.c.collection_id == collection_id).order_by(chunks_t.c.id)).all()
            metadata = dict(conn.execute(sa.select(docs_t.c.id, docs_t.c.metadata)
                                         .where(docs_t.c.collection_id == collection_id)).all())
        keys = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        documents = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        vectors = np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(len(rows), dim or 0)
        return Snapshot(version, dim, keys, documents, vectors.astype(np.float32, copy=False), metadata)

    def chunks(self, keys: list[int]) -> dict[int, ChunkRow]:
        """The chunks by key, with their document's id and metadata (a key deleted meanwhile is left out)."""
        if not keys:
            return {}
        query = (sa.select(chunks_t.c.id, chunks_t.c.document_id, docs_t.c.doc_id, chunks_t.c.chunk_index,
                           chunks_t.c.text, docs_t.c.metadata)
                 .join(docs_t, docs_t.c.id == chunks_t.c.document_id).where(chunks_t.c.id.in_(keys)))
        with self.engine.connect() as conn:
            return {r[0]: ChunkRow(*r) for r in conn.execute(query).all()}

    # -- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _delete_chunks(conn: sa.Connection, document_keys: list[int]) -> np.ndarray:
        if not document_keys:
            return np.zeros(0, np.int64)
        where = chunks_t.c.document_id.in_(document_keys)
        removed = conn.execute(sa.select(chunks_t.c.id).where(where)).scalars().all()
        conn.execute(chunks_t.delete().where(where))
        return np.asarray(removed, np.int64)

    @staticmethod
    def _insert_chunks(conn: sa.Connection, collection_id: int, document_key: int, doc: NewDocument) -> np.ndarray:
        if not doc.chunks:
            return np.zeros(0, np.int64)
        rows = [dict(collection_id=collection_id, document_id=document_key, chunk_index=i, text=text,
                     embedding=vector_bytes(vector)) for i, (text, vector) in enumerate(zip(doc.chunks, doc.vectors))]
        keys = conn.execute(chunks_t.insert().returning(chunks_t.c.id, sort_by_parameter_order=True), rows)
        return np.asarray(keys.scalars().all(), np.int64)

    @staticmethod
    def _bump(conn: sa.Connection, collection_id: int) -> bool:
        """Add 1 to the collection's version, first in a write's transaction (so writes to one collection
        take turns, on PostgreSQL too); False when it is gone."""
        done = conn.execute(collections_t.update().where(collections_t.c.id == collection_id)
                            .values(version=collections_t.c.version + 1))
        return done.rowcount == 1

    @staticmethod
    def _recount(conn: sa.Connection, collection_id: int, dim: int | None) -> int:
        """Recount the collection's documents and chunks (last in a write's transaction); its new version."""
        counts = dict(
            num_documents=sa.select(sa.func.count()).select_from(docs_t)
            .where(docs_t.c.collection_id == collection_id).scalar_subquery(),
            num_chunks=sa.select(sa.func.count()).select_from(chunks_t)
            .where(chunks_t.c.collection_id == collection_id).scalar_subquery())
        if dim is not None:
            counts["dimensions"] = dim
        conn.execute(collections_t.update().where(collections_t.c.id == collection_id).values(**counts))
        return conn.execute(sa.select(collections_t.c.version).where(collections_t.c.id == collection_id)).scalar()


def _collection(row) -> CollectionRow:
    return CollectionRow(row["id"], row["owner"], row["name"], row["embedding_model"], row["dimensions"],
                         Chunking(**row["chunking"]), row["metadata"], row["created_at"], row["version"],
                         row["num_documents"], row["num_chunks"])


def _document(row, with_text: bool) -> DocumentRow:
    return DocumentRow(row["id"], row["doc_id"], row["text"] if with_text else None, row["metadata"],
                       row["num_chunks"], row["created_at"])
