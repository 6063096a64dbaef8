"""CollectionsService: the collections API in-process (routes.py serves it over HTTP; pipelines call it).

Every call names its owner (`owner_of(request)`: "tenant:<id>" on a gateway with tenancy, else "open"), and a
collection is looked up by (owner, name), so another owner's collection answers exactly like a missing one.
Writes (add, replace, delete documents) embed the chunks first (collections/ingest.py), then store them in
one transaction that bumps the collection's version, then move this process's in-memory index to that
version; a search first reads the collection row and rebuilds the index from SQL when the row is newer than
the index (another process wrote), then searches in memory (collections/live.py) and reads the hits' texts
from SQL. Writes to one collection are serialized in this process; searches run beside them. Store and index
work runs on threads; a database that fails is a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import numpy as np
import sqlalchemy as sa
from starlette.requests import Request

from infercloud.collections.chunking import Chunking
from infercloud.collections.embed import CallContext, Embed
from infercloud.collections.errors import (collection_exists, document_not_found, embedding_size_changed,
                                           not_found, store_unavailable, write_conflict)
from infercloud.collections.filters import MetadataFilter
from infercloud.collections.hnsw import HnswIndex
from infercloud.collections.ingest import embed_documents
from infercloud.collections.live import DEFAULT_MAX_BYTES, LiveCollection, LiveCollections, MakeIndex
from infercloud.collections.protocol import MAX_TOP_K, CreateCollectionRequest, DocumentBody
from infercloud.collections.rows import CollectionRow, DocumentRow, Hit, NewDocument, SearchResult, Written
from infercloud.collections.store import CollectionStore
from infercloud.openai.errors import APIError, bad_request
from infercloud.store.database import default_database_url, open_database

log = logging.getLogger("infercloud.collections")

OwnerOf = Callable[[Request], Awaitable[str]]                 # the caller's owner key (a 401 when unknown)
ModelsOf = Callable[[Request], Awaitable[dict[str, str]]]     # the models the caller may use: name -> kind
OPEN_OWNER = "open"


class CollectionsService:
    def __init__(self, embed: Embed, owner_of: OwnerOf, models_of: ModelsOf, database: str | None = None,
                 engine: sa.Engine | None = None, clock: Callable[[], float] = time.time,
                 make_index: MakeIndex = HnswIndex, max_live_bytes: int = DEFAULT_MAX_BYTES):
        """`database`: a SQLAlchemy URL; else `engine`; else the SQLite file under the infercloud home (opened
        on first use)."""
        self.embed = embed
        self.owner_of = owner_of
        self.models_of = models_of
        self.database = database
        self.engine = None if database else engine
        self.clock = clock
        self.make_index = make_index
        self.live = LiveCollections(max_live_bytes)
        self._store: CollectionStore | None = None
        self._opening = asyncio.Lock()
        self._locks: dict[int, asyncio.Lock] = {}

    async def store(self) -> CollectionStore:
        async with self._opening:
            if self._store is None:
                engine = self.engine
                if engine is None:
                    try:
                        engine = await asyncio.to_thread(open_database, self.database or default_database_url())
                    except sa.exc.SQLAlchemyError as exc:
                        log.warning("cannot open the collection store: %s", exc)
                        raise store_unavailable() from exc
                self._store = CollectionStore(engine)
        return self._store

    async def _db(self, method: str, *args):
        store = await self.store()
        try:
            return await asyncio.to_thread(getattr(store, method), *args)
        except sa.exc.IntegrityError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            log.warning("collection store: %s failed: %s", method, exc)
            raise store_unavailable() from exc

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc).replace(tzinfo=None)

    # -- collections ---------------------------------------------------------------------------------
    async def create(self, request: Request, owner: str, body: CreateCollectionRequest) -> CollectionRow:
        model = await self._embedding_model(request, body.embedding_model)
        chunking = Chunking(body.chunking.max_words, body.chunking.overlap_words)
        try:
            return await self._db("create", owner, body.name, model, chunking, body.metadata or {}, self._now())
        except sa.exc.IntegrityError:
            raise collection_exists(body.name) from None

    async def list_collections(self, owner: str) -> list[CollectionRow]:
        return await self._db("list", owner)

    async def get(self, owner: str, name: str) -> CollectionRow:
        found = await self._db("get", owner, name)
        if found is None:
            raise not_found(name)
        return found

    async def delete(self, owner: str, name: str) -> None:
        key = await self._db("delete", owner, name)
        if key is None:
            raise not_found(name)
        self.live.drop(key)
        self._locks.pop(key, None)

    # -- documents -----------------------------------------------------------------------------------
    async def add_documents(self, ctx: CallContext, owner: str, name: str,
                            documents: list[DocumentBody]) -> tuple[list[DocumentRow], int]:
        """Chunk, embed and store the documents (replacing those whose id exists); the stored documents (no
        text) and the embedding tokens used."""
        collection = await self.get(owner, name)
        ids = [d.id or f"doc_{uuid.uuid4().hex[:24]}" for d in documents]
        first: dict[str, int] = {}
        for i, doc_id in enumerate(ids):
            if first.setdefault(doc_id, i) != i:
                raise bad_request(f"Document id '{doc_id}' appears twice in 'documents' (at {first[doc_id]} and "
                                  f"{i}).", param="documents")
        ingested = await embed_documents(self.embed, ctx, collection.embedding_model, [d.text for d in documents],
                                         collection.chunking)
        dim = collection.dimensions or next((len(v[0]) for v in ingested.vectors if v), 0)
        new = [NewDocument(doc_id, doc.text, doc.metadata or {}, ingested.chunks[i], ingested.arrays(i, dim))
               for i, (doc_id, doc) in enumerate(zip(ids, documents))]
        if any(d.vectors.shape[1] != dim for d in new):
            raise embedding_size_changed(collection.embedding_model, dim)
        now = self._now()
        async with self._lock_of(collection.id):
            try:
                written = await self._db("put_documents", collection, new, now)
            except sa.exc.IntegrityError:   # the collection was deleted meanwhile, or another process raced
                raise write_conflict() from None
            if written is None:
                raise not_found(name)
            await self._advance(collection.id, written)
        return [DocumentRow(d.key, doc_id, None, doc.metadata, len(d.chunk_keys), now)
                for d, doc_id, doc in zip(written.documents, ids, new)], ingested.prompt_tokens

    async def get_document(self, owner: str, name: str, doc_id: str) -> DocumentRow:
        found = await self._db("get_document", await self.get(owner, name), doc_id)
        if found is None:
            raise document_not_found(name, doc_id)
        return found

    async def delete_document(self, owner: str, name: str, doc_id: str) -> None:
        collection = await self.get(owner, name)
        async with self._lock_of(collection.id):
            written = await self._db("delete_document", collection, doc_id)
            if written is None:
                raise document_not_found(name, doc_id)
            await self._advance(collection.id, written)

    async def list_documents(self, owner: str, name: str, limit: int = 20, after: str | None = None,
                             descending: bool = True) -> tuple[list[DocumentRow], bool]:
        page = await self._db("list_documents", await self.get(owner, name), limit, after, descending)
        if page is None:
            raise bad_request(f"No document '{(after or '')[:128]}' in collection '{name}'.", param="after")
        return page

    # -- search --------------------------------------------------------------------------------------
    async def search(self, ctx: CallContext, owner: str, name: str, query: str, top_k: int = 10,
                     filter: dict | None = None, unique_documents: bool = False) -> SearchResult:
        """The top_k chunks closest to `query` (embedded with the collection's model, metered to `ctx`)."""
        where = _checked(top_k, filter)
        collection = await self.get(owner, name)
        vector, tokens = await self.embed_query(ctx, collection, query)
        return SearchResult(await self._search(collection, vector, top_k, where, unique_documents), tokens)

    async def embed_query(self, ctx: CallContext, collection: CollectionRow, query: str) -> tuple[np.ndarray, int]:
        """`query`'s unit vector by the collection's embedding model, and its tokens."""
        try:
            embedded = await self.embed(ctx, collection.embedding_model, [query])
        except APIError as exc:
            if exc.status == 400 and exc.param == "input":
                raise bad_request(f"The embedding model refused the query: {exc.message}", param="query") from None
            raise
        return embedded.vectors[0], embedded.prompt_tokens

    async def search_by_vector(self, owner: str, name: str, vector: np.ndarray, top_k: int = 10,
                               filter: dict | None = None, unique_documents: bool = False) -> SearchResult:
        """The top_k chunks closest to `vector` (of the collection's embedding size; scaled to unit length),
        of the documents matching `filter`; with `unique_documents`, the best chunk of each of the top_k
        best documents."""
        where = _checked(top_k, filter)
        collection = await self.get(owner, name)
        return SearchResult(await self._search(collection, vector, top_k, where, unique_documents), 0)

    async def _search(self, collection: CollectionRow, vector: np.ndarray, top_k: int, where: MetadataFilter | None,
                      unique_documents: bool) -> list[Hit]:
        vector = np.asarray(vector, np.float32).reshape(-1)
        if collection.dimensions is None:
            return []
        if len(vector) != collection.dimensions:
            raise bad_request(f"The vector has {len(vector)} values; collection '{collection.name}' holds vectors "
                              f"of {collection.dimensions}.", param="vector")
        live = await self._live(collection)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        matches = await asyncio.to_thread(live.search, vector, top_k, where, unique_documents)
        chunks = await self._db("chunks", [m.chunk_key for m in matches])
        return [Hit(c.document_id, c.chunk_index, c.text, round(m.score, 6), c.metadata)
                for m in matches if (c := chunks.get(m.chunk_key)) is not None]

    # -- the in-memory index ---------------------------------------------------------------------------
    async def _live(self, collection: CollectionRow) -> LiveCollection:
        """This process's index of the collection, rebuilt from SQL when the row is newer (or none is held)."""
        live = self.live.get(collection.id)
        if live is not None and live.version >= collection.version:
            return live
        async with self._lock_of(collection.id):
            live = self.live.get(collection.id)
            if live is None or live.version < collection.version:
                snapshot = await self._db("snapshot", collection.id)
                live = await asyncio.to_thread(LiveCollection, snapshot, self.make_index)
                self.live.put(collection.id, live)
        return live

    async def _advance(self, collection_id: int, written: Written) -> None:
        """Move the held index to the write's version; one that missed a write (another process's) is dropped."""
        live = self.live.get(collection_id)
        if live is None:
            return
        if live.version != written.version - 1:
            self.live.drop(collection_id)
            return
        await asyncio.to_thread(live.apply, written)
        self.live.trim(keep=collection_id)

    def _lock_of(self, collection_id: int) -> asyncio.Lock:
        return self._locks.setdefault(collection_id, asyncio.Lock())

    async def _embedding_model(self, request: Request, asked: str | None) -> str:
        models = await self.models_of(request)
        if asked is None:
            found = next((name for name, kind in models.items() if kind == "embedding"), None)
            if found is None:
                raise bad_request("This server serves no embedding model; a collection needs one.",
                                  param="embedding_model", code="no_embedding_model")
            return found
        if asked not in models:
            raise APIError(404, f"The model `{asked}` does not exist.", param="embedding_model",
                           code="model_not_found")
        if models[asked] != "embedding":
            raise bad_request(f"The model `{asked}` is not an embedding model.", param="embedding_model",
                              code="not_an_embedding_model")
        return asked


def _checked(top_k: int, filter: dict | None) -> MetadataFilter | None:
    """The search's filter, parsed; a 400 for it or for a top_k out of range."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise bad_request(f"'top_k' must be from 1 to {MAX_TOP_K}, got {top_k}.", param="top_k")
    return MetadataFilter.parse(filter)
