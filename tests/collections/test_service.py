"""collections/service.py in-process, with a fake embedding (conftest.FakeEmbed): creating, upserting, searching
with filters and per-document answers, owners kept apart, and a second process noticing a write by version."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from starlette.requests import Request

from infercloud.collections.embed import CallContext
from infercloud.collections.hnsw import HnswIndex, build_inline
from infercloud.collections.protocol import CreateCollectionRequest, DocumentBody
from infercloud.collections.service import CollectionsService
from infercloud.openai.errors import APIError
from tests.collections.conftest import FakeEmbed, bag_of_words

MODELS = {"chat-model": "chat", "embed-a": "embedding", "embed-b": "embedding"}
REQUEST = Request({"type": "http", "headers": [], "method": "POST", "path": "/"})
CTX = CallContext(REQUEST)

FRUIT = [DocumentBody(id="apple", text="apple red sweet fruit tree", metadata={"kind": "fruit", "year": 2020}),
         DocumentBody(id="pear", text="pear green fruit tree", metadata={"kind": "fruit", "year": 2021}),
         DocumentBody(id="sky", text="sky blue air cloud", metadata={"kind": "weather", "year": 2020.0}),
         DocumentBody(id="rain", text="rain cloud water sky", metadata={"kind": "weather", "year": True})]


def service(database_url: str, embed: FakeEmbed | None = None) -> CollectionsService:
    async def owner_of(request):
        return "open"

    async def models_of(request):
        return MODELS
    return CollectionsService(embed or FakeEmbed(), owner_of, models_of, database=database_url,
                              make_index=lambda dim: HnswIndex(dim, exact_below=4, start_build=build_inline))


def run(coro):
    return asyncio.run(coro)


def error_of(coro) -> APIError:
    with pytest.raises(APIError) as caught:
        run(coro)
    return caught.value


def create(svc: CollectionsService, name: str = "c", owner: str = "open", **body):
    return svc.create(REQUEST, owner, CreateCollectionRequest(name=name, **body))


def test_create_picks_the_first_embedding_model_and_refuses_what_it_cannot_use(database_url):
    svc = service(database_url)
    assert run(create(svc)).embedding_model == "embed-a"
    assert run(create(svc, "other", embedding_model="embed-b")).embedding_model == "embed-b"
    exists = error_of(create(svc))
    assert (exists.status, exists.code, exists.param) == (409, "collection_exists", "name")
    unknown = error_of(create(svc, "x", embedding_model="nope"))
    assert (unknown.status, unknown.code, unknown.param) == (404, "model_not_found", "embedding_model")
    assert error_of(create(svc, "x", embedding_model="chat-model")).status == 400


def test_search_finds_the_closest_chunks_and_filters_by_metadata(database_url):
    embed = FakeEmbed()
    svc = service(database_url, embed)
    run(create(svc))
    stored, tokens = run(svc.add_documents(CTX, "open", "c", FRUIT))
    assert [d.id for d in stored] == ["apple", "pear", "sky", "rain"] and tokens == 17 and len(embed.calls) == 1
    found = run(svc.search(CTX, "open", "c", "green pear", top_k=2))
    assert [h.document_id for h in found.hits][0] == "pear" and found.prompt_tokens == 2
    assert found.hits[0].score == pytest.approx(float(bag_of_words("green pear") @ bag_of_words(FRUIT[1].text)),
                                                abs=1e-5)
    by_kind = run(svc.search(CTX, "open", "c", "cloud sky", top_k=10, filter={"kind": "fruit"}))
    assert {h.document_id for h in by_kind.hits} == {"apple", "pear"}
    in_years = run(svc.search(CTX, "open", "c", "cloud", filter={"year": {"$in": [2020, 2019]}}))
    assert {h.document_id for h in in_years.hits} == {"apple", "sky"}    # 2020.0 == 2020; True is not a number
    both = run(svc.search(CTX, "open", "c", "cloud", filter={"kind": "weather", "year": True}))
    assert [h.document_id for h in both.hits] == ["rain"]
    assert run(svc.search(CTX, "open", "c", "cloud", filter={"kind": "none"})).hits == []
    for bad in ({"kind": {"$gt": 1}}, {"kind": [1, 2]}, {"kind": {"$in": []}}):
        assert error_of(svc.search(CTX, "open", "c", "x", filter=bad)).param == "filter"
    assert error_of(svc.search(CTX, "open", "c", "x", top_k=0)).param == "top_k"


def test_unique_documents_returns_each_documents_best_chunk(database_url):
    svc = service(database_url)
    run(create(svc, chunking={"max_words": 2, "overlap_words": 0}))
    run(svc.add_documents(CTX, "open", "c", [DocumentBody(id="long", text="alpha beta alpha gamma alpha delta"),
                                             DocumentBody(id="short", text="alpha omega")]))
    chunks = run(svc.search(CTX, "open", "c", "alpha", top_k=4)).hits
    assert [h.document_id for h in chunks].count("long") == 3
    unique = run(svc.search(CTX, "open", "c", "alpha", top_k=4, unique_documents=True)).hits
    assert sorted(h.document_id for h in unique) == ["long", "short"]
    assert unique[0].score == chunks[0].score


def test_upsert_and_delete_keep_the_index_in_step(database_url):
    svc = service(database_url)
    run(create(svc))
    run(svc.add_documents(CTX, "open", "c", FRUIT))
    run(svc.add_documents(CTX, "open", "c", [DocumentBody(id="apple", text="magma lava basalt")]))
    assert run(svc.search(CTX, "open", "c", "magma", top_k=1)).hits[0].document_id == "apple"
    assert "apple" not in [h.document_id for h in run(svc.search(CTX, "open", "c", "red sweet fruit")).hits[:1]]
    run(svc.delete_document("open", "c", "apple"))
    assert "apple" not in {h.document_id for h in run(svc.search(CTX, "open", "c", "magma")).hits}
    assert run(svc.get("open", "c")).num_documents == 3
    gone = error_of(svc.delete_document("open", "c", "apple"))
    assert (gone.status, gone.code) == (404, "document_not_found")
    twice = error_of(svc.add_documents(CTX, "open", "c", [DocumentBody(id="x", text="a"),
                                                          DocumentBody(id="x", text="b")]))
    assert (twice.status, twice.param) == (400, "documents")


def test_another_owners_collection_is_exactly_as_missing(database_url):
    svc = service(database_url)
    run(create(svc, "xq1", owner="tenant:1"))
    run(svc.add_documents(CTX, "tenant:1", "xq1", FRUIT))
    answers = []
    for name in ("xq1", "zz9"):
        calls = [svc.get("tenant:2", name), svc.delete("tenant:2", name),
                 svc.search(CTX, "tenant:2", name, "apple"), svc.get_document("tenant:2", name, "apple"),
                 svc.add_documents(CTX, "tenant:2", name, FRUIT[:1]), svc.list_documents("tenant:2", name)]
        answers.append([(e.status, e.code, e.message.replace(name, "NAME")) for e in map(error_of, calls)])
    assert answers[0] == answers[1] and {a[0] for a in answers[0]} == {404}
    assert run(svc.list_collections("tenant:2")) == [] and run(svc.get("tenant:1", "xq1")).num_documents == 4


def test_a_second_process_notices_a_write_by_the_version_and_rebuilds(database_url):
    one, two = service(database_url), service(database_url)
    run(create(one))
    run(one.add_documents(CTX, "open", "c", FRUIT))
    assert run(two.search(CTX, "open", "c", "apple", top_k=1)).hits[0].document_id == "apple"   # built from SQL
    run(one.add_documents(CTX, "open", "c", [DocumentBody(id="new", text="zebra stripes savanna")]))
    assert run(two.search(CTX, "open", "c", "zebra", top_k=1)).hits[0].document_id == "new"
    run(two.delete_document("open", "c", "new"))          # two's index moves on; one's is now one write behind
    assert "new" not in {h.document_id for h in run(one.search(CTX, "open", "c", "zebra")).hits}


def test_chunks_the_model_refuses_as_too_long_are_cut_until_they_fit(database_url):
    embed = FakeEmbed(max_words=7)
    svc = service(database_url, embed)
    run(create(svc, chunking={"max_words": 20, "overlap_words": 4}))
    text = " ".join(f"w{i}" for i in range(100))
    stored, _ = run(svc.add_documents(CTX, "open", "c", [DocumentBody(id="d", text=text),
                                                         DocumentBody(id="s", text="short one")]))
    chunks = [c for _, texts in embed.calls for c in texts]
    last = embed.calls[-1][1]
    assert all(len(c.split()) <= 7 for c in last) and stored[0].num_chunks == len(last) - 1
    assert {w for c in last for w in c.split()} >= set(text.split())    # every word embedded
    assert len(embed.calls) <= 3 and len(chunks) > len(last)


def test_many_chunks_are_embedded_in_batches_of_256(database_url):
    embed = FakeEmbed()
    svc = service(database_url, embed)
    run(create(svc, chunking={"max_words": 1, "overlap_words": 0}))
    run(svc.add_documents(CTX, "open", "c", [DocumentBody(text=" ".join(["word"] * 300)),
                                             DocumentBody(text=" ".join(["other"] * 300))]))
    assert [len(texts) for _, texts in embed.calls] == [256, 256, 88]
    assert run(svc.get("open", "c")).num_chunks == 600
    vector = np.zeros(256, np.float32)
    assert error_of(svc.search_by_vector("open", "c", vector[:10])).param == "vector"


def test_concurrent_writes_to_one_collection_all_land_in_the_index(database_url):
    svc = service(database_url)
    run(create(svc))

    async def many():
        await asyncio.gather(*(svc.add_documents(CTX, "open", "c", [DocumentBody(id=f"d{i}", text=f"topic{i} note")])
                               for i in range(6)))
        return await asyncio.gather(*(svc.search(CTX, "open", "c", f"topic{i}", top_k=1) for i in range(6)))
    run(svc.add_documents(CTX, "open", "c", FRUIT))
    run(svc.search(CTX, "open", "c", "warm"))   # the index is held from here on, and moved by each write
    held = svc.live.get(run(svc.get("open", "c")).id)
    found = run(many())
    assert [r.hits[0].document_id for r in found] == [f"d{i}" for i in range(6)]
    assert run(svc.get("open", "c")).version == held.version == 7    # never rebuilt: each write applied in turn
    assert svc.live.get(run(svc.get("open", "c")).id) is held


def test_collections_beyond_the_memory_bound_are_dropped_and_rebuilt(database_url):
    svc = service(database_url)
    svc.live.max_bytes = 256 * 4 * 5          # room for 5 vectors of the fake embedding
    for name in ("one", "two"):
        run(create(svc, name))
        run(svc.add_documents(CTX, "open", name, FRUIT))
        run(svc.search(CTX, "open", name, "apple"))
    one, two = (run(svc.get("open", n)).id for n in ("one", "two"))
    assert svc.live.get(one) is None and svc.live.get(two) is not None
    assert run(svc.search(CTX, "open", "one", "apple", top_k=1)).hits[0].document_id == "apple"
    assert svc.live.get(one) is not None and svc.live.get(two) is None
