"""collections/store.py: each owner's collections are its own; every write bumps the version and recounts."""

# ruff: noqa: F811  (pytest fixtures as parameters shadow the imported `engine` fixture)
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import sqlalchemy as sa

from infercloud.collections.chunking import Chunking
from infercloud.collections.store import CollectionStore, NewDocument
from tests.collections.conftest import bag_of_words

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


def document(doc_id: str, *chunks: str, **metadata) -> NewDocument:
    return NewDocument(doc_id, " ".join(chunks), metadata, list(chunks), np.stack([bag_of_words(c) for c in chunks]))


def test_an_owner_sees_only_its_own_collections(engine):
    store = CollectionStore(engine)
    mine = store.create("tenant:1", "docs", "minilm", Chunking(), {"team": "a"}, NOW)
    assert mine.version == 0 and mine.num_documents == mine.num_chunks == 0 and mine.dimensions is None
    store.create("tenant:2", "docs", "minilm", Chunking(50, 5), {}, NOW)    # the same name, another owner
    with pytest.raises(sa.exc.IntegrityError):
        store.create("tenant:1", "docs", "minilm", Chunking(), {}, NOW)
    assert store.get("tenant:1", "docs") == mine
    assert store.get("tenant:2", "docs").chunking == Chunking(50, 5)
    assert store.get("tenant:3", "docs") is None
    assert [c.owner for c in store.list("tenant:2")] == ["tenant:2"]
    assert store.delete("tenant:3", "docs") is None
    assert store.delete("tenant:1", "docs") == mine.id
    assert store.get("tenant:1", "docs") is None and store.get("tenant:2", "docs") is not None


def test_documents_are_replaced_by_id_and_each_write_bumps_the_version(engine):
    store = CollectionStore(engine)
    collection = store.create("open", "c", "minilm", Chunking(), {}, NOW)
    first = store.put_documents(collection, [document("a", "red apple", "green pear", kind="fruit"),
                                             document("b", "blue sky")], NOW)
    assert first.version == 1 and len(first.removed_chunks) == 0
    a_key = first.documents[0].key
    row = store.get("open", "c")
    assert (row.version, row.num_documents, row.num_chunks, row.dimensions) == (1, 2, 3, 256)

    second = store.put_documents(row, [document("a", "yellow banana", kind="fruit", ripe=True)], NOW)
    assert second.version == 2 and second.documents[0].key == a_key   # the row is kept
    assert sorted(second.removed_chunks.tolist()) == sorted(first.documents[0].chunk_keys.tolist())
    got = store.get_document(row, "a")
    assert (got.text, got.metadata, got.num_chunks) == ("yellow banana", {"kind": "fruit", "ripe": True}, 1)
    assert store.get("open", "c").num_chunks == 2

    snapshot = store.snapshot(row.id)
    assert snapshot.version == 2 and snapshot.vectors.shape == (2, 256)
    assert set(snapshot.chunk_documents.tolist()) == {a_key, first.documents[1].key}
    assert np.allclose(snapshot.vectors[snapshot.chunk_keys.tolist().index(second.documents[0].chunk_keys[0])],
                       bag_of_words("yellow banana"))
    chunks = store.chunks(snapshot.chunk_keys.tolist() + [10**9])
    assert sorted((c.document_id, c.chunk_index, c.text) for c in chunks.values()) == [
        ("a", 0, "yellow banana"), ("b", 0, "blue sky")]

    gone = store.delete_document(row, "b")
    assert gone.version == 3 and gone.removed_documents == (first.documents[1].key,)
    assert store.delete_document(row, "b") is None and store.get_document(row, "b") is None
    assert store.get("open", "c").num_documents == 1


def test_documents_page_in_either_order(engine):
    store = CollectionStore(engine)
    collection = store.create("open", "c", "minilm", Chunking(), {}, NOW)
    store.put_documents(collection, [document(f"d{i}", f"text {i}") for i in range(5)], NOW)
    page, more = store.list_documents(collection, 2, None, descending=False)
    assert [d.id for d in page] == ["d0", "d1"] and more and page[0].text is None
    page, more = store.list_documents(collection, 2, "d3", descending=False)
    assert [d.id for d in page] == ["d4"] and not more
    page, more = store.list_documents(collection, 10, None, descending=True)
    assert [d.id for d in page] == ["d4", "d3", "d2", "d1", "d0"] and not more
    assert store.list_documents(collection, 2, "nope", descending=True) is None


def test_writes_to_a_deleted_collection_change_nothing(engine):
    store = CollectionStore(engine)
    collection = store.create("open", "c", "minilm", Chunking(), {}, NOW)
    store.delete("open", "c")
    assert store.put_documents(collection, [document("a", "text")], NOW) is None
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM collection_documents")).scalar() == 0
