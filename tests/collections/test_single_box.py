"""Collections on the single-box server (`infercloud serve`, no cluster): a real process with the real
all-MiniLM-L6-v2 only. Collections go to the SQLite file the box's stored responses use (the test's own)."""

from __future__ import annotations

import httpx
import pytest

from tests.worker.conftest import start_server

MINILM = "all-minilm-l6-v2"
DOCS = [
    {"id": "paris", "text": "Paris is the capital of France, on the Seine; the Eiffel Tower stands there.",
     "metadata": {"topic": "geography", "year": 1889}},
    {"id": "python", "text": "Python is a programming language with dynamic typing and garbage collection.",
     "metadata": {"topic": "software", "year": 1991}},
    {"id": "photosynthesis", "text": "Plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
     "metadata": {"topic": "biology"}},
    {"id": "volcano", "text": "A volcano erupts when magma from the mantle rises through the crust.",
     "metadata": {"topic": "geography"}},
]


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    folder = tmp_path_factory.mktemp("collections")
    server = start_server(folder, {"models": [{"name": MINILM, "kind": "embedding"}],
                                   "responses": {"database": f"sqlite:///{folder}/box.db"}})
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def api(box):
    with httpx.Client(base_url=f"{box.url}/v1", timeout=120) as client:
        yield client


def error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_create_add_search_and_delete(api):
    created = api.post("/collections", json={"name": "kb", "metadata": {"team": "docs"}})
    assert created.status_code == 200, created.text
    collection = created.json()
    assert collection["id"] == "kb" and collection["object"] == "collection" and collection["embedding_model"] == MINILM
    assert collection["chunking"] == {"max_words": 200, "overlap_words": 40} and collection["num_documents"] == 0
    assert isinstance(collection["created_at"], int) and collection["metadata"] == {"team": "docs"}

    added = api.post("/collections/kb/documents", json={"documents": DOCS + [{"text": "An anonymous note."}]}).json()
    assert [d["id"] for d in added["data"][:4]] == ["paris", "python", "photosynthesis", "volcano"]
    assert added["data"][4]["id"].startswith("doc_") and all(d["num_chunks"] == 1 for d in added["data"])
    assert added["usage"]["prompt_tokens"] > 40 and added["usage"]["total_tokens"] == added["usage"]["prompt_tokens"]
    assert api.get("/collections/kb").json()["num_documents"] == 5

    found = api.post("/collections/kb/search", json={"query": "Which city has the Eiffel Tower?", "top_k": 3}).json()
    assert found["object"] == "list" and found["usage"]["prompt_tokens"] > 0
    best = found["data"][0]
    assert best["document_id"] == "paris" and best["chunk_index"] == 0 and best["text"] == DOCS[0]["text"]
    assert best["metadata"] == DOCS[0]["metadata"] and 0 < best["score"] <= 1
    assert [h["score"] for h in found["data"]] == sorted((h["score"] for h in found["data"]), reverse=True)
    vector = api.post("/embeddings", json={"model": "all-minilm-l6-v2", "input": "Which city has the Eiffel Tower?"}
                      ).json()["data"][0]["embedding"]
    by_vector = api.post("/collections/kb/search", json={"vector": vector, "top_k": 3}).json()
    assert [h["document_id"] for h in by_vector["data"]] == [h["document_id"] for h in found["data"]]
    assert by_vector["usage"]["prompt_tokens"] == 0   # the caller embedded it

    rocks = api.post("/collections/kb/search", json={"query": "lava and eruptions", "filter": {
        "topic": {"$in": ["geography", "software"]}}}).json()["data"]
    assert rocks[0]["document_id"] == "volcano" and {h["document_id"] for h in rocks} == {"paris", "python",
                                                                                         "volcano"}
    assert api.post("/collections/kb/search", json={"query": "x", "filter": {"year": 1991}}).json()["data"][0][
        "document_id"] == "python"

    doc = api.get("/collections/kb/documents/python").json()
    assert doc == {"id": "python", "object": "collection.document", "text": DOCS[1]["text"],
                   "metadata": DOCS[1]["metadata"], "num_chunks": 1, "created_at": doc["created_at"]}
    assert api.delete("/collections/kb/documents/python").json()["deleted"] is True
    error(api.get("/collections/kb/documents/python"), 404)
    assert "python" not in {h["document_id"] for h in api.post("/collections/kb/search", json={
        "query": "programming language", "top_k": 10}).json()["data"]}

    assert [c["id"] for c in api.get("/collections").json()["data"]] == ["kb"]
    assert api.delete("/collections/kb").json() == {"id": "kb", "object": "collection.deleted", "deleted": True}
    error(api.get("/collections/kb"), 404)
    assert api.get("/collections").json()["data"] == []


def test_documents_page_and_a_replaced_document_is_searched_anew(api):
    api.post("/collections", json={"name": "pages", "chunking": {"max_words": 12, "overlap_words": 3}})
    api.post("/collections/pages/documents", json={"documents": [{"id": f"d{i}", "text": f"Note number {i}."}
                                                                 for i in range(5)]})
    first = api.get("/collections/pages/documents", params={"limit": 2, "order": "asc"}).json()
    assert [d["id"] for d in first["data"]] == ["d0", "d1"] and first["has_more"] and "text" not in first["data"][0]
    rest = api.get("/collections/pages/documents", params={"limit": 10, "order": "asc",
                                                           "after": first["last_id"]}).json()
    assert [d["id"] for d in rest["data"]] == ["d2", "d3", "d4"] and not rest["has_more"]
    assert api.get("/collections/pages/documents").json()["first_id"] == "d4"    # newest first by default

    long_text = " ".join(f"Sentence {i} says the tide rises twice a day at the harbour." for i in range(8))
    replaced = api.post("/collections/pages/documents", json={"documents": [{"id": "d2", "text": long_text}]})
    assert replaced.json()["data"][0]["num_chunks"] > 1
    hits = api.post("/collections/pages/search", json={"query": "harbour tides", "top_k": 3,
                                                       "unique_documents": True}).json()["data"]
    assert hits[0]["document_id"] == "d2" and len({h["document_id"] for h in hits}) == len(hits)
    assert api.get("/collections/pages").json()["num_documents"] == 5


def test_a_text_denser_than_the_models_window_is_cut_until_every_chunk_fits(api):
    api.post("/collections", json={"name": "dense"})    # 200-word windows; MiniLM reads 256 tokens
    words = [f"cfg_{i}=0x{i * 7919:06x}/α{i}" for i in range(400)]           # several tokens per word
    added = api.post("/collections/dense/documents", json={"documents": [{"id": "cfg", "text": " ".join(words)}]})
    assert added.status_code == 200, added.text
    assert added.json()["data"][0]["num_chunks"] > 2
    hit = api.post("/collections/dense/search", json={"query": words[321], "top_k": 1}).json()["data"][0]
    assert hit["document_id"] == "cfg"


def test_bad_requests_get_openai_errors(api):
    assert error(api.post("/collections", json={"name": "bad name!"}), 400)["param"] == "name"
    assert error(api.post("/collections", json={"name": "x", "colour": 1}), 400)["code"] == "unsupported_field"
    assert error(api.post("/collections", json={"name": "x", "chunking": {"max_words": 10, "overlap_words": 10}}),
                 400)["param"] == "chunking"
    missing_model = error(api.post("/collections", json={"name": "x", "embedding_model": "nope"}), 404)
    assert (missing_model["code"], missing_model["param"]) == ("model_not_found", "embedding_model")
    api.post("/collections", json={"name": "errs"})
    assert error(api.post("/collections", json={"name": "errs"}), 409)["code"] == "collection_exists"
    too_many = {"documents": [{"text": "t"}] * 1001}
    assert error(api.post("/collections/errs/documents", json=too_many), 400)["param"] == "documents"
    assert error(api.post("/collections/errs/documents", json={"documents": [{"text": "  "}]}), 400)["param"] == \
        "documents"
    assert error(api.post("/collections/errs/search", json={"query": "q", "top_k": 101}), 400)["param"] == "top_k"
    assert "exactly one" in error(api.post("/collections/errs/search", json={"query": "q", "vector": [0.1]}),
                                  400)["message"]
    assert "exactly one" in error(api.post("/collections/errs/search", json={"top_k": 3}), 400)["message"]
    assert error(api.post("/collections/errs/search", json={"query": "q", "filter": {"a": {"$gt": 1}}}),
                 400)["param"] == "filter"
    assert error(api.get("/collections/errs/documents", params={"limit": 0}), 400)["param"] == "limit"
    assert error(api.get("/collections/errs/documents", params={"after": "nope"}), 400)["param"] == "after"
    assert error(api.get("/collections/errs", params={"x": 1}), 400)["code"] == "unsupported_parameter"
    assert error(api.post("/collections/errs/search", content=b"{not json"), 400)
    for response in (api.get("/collections/none"), api.delete("/collections/none"),
                     api.post("/collections/none/search", json={"query": "q"}),
                     api.post("/collections/none/documents", json={"documents": [{"text": "t"}]}),
                     api.get("/collections/none/documents/d")):
        assert error(response, 404)["code"] == "collection_not_found"


def test_openapi_describes_the_bodies(box):
    schema = httpx.get(f"{box.url}/openapi.json").json()
    for path in ("/v1/collections", "/v1/collections/{name}/documents", "/v1/collections/{name}/search"):
        assert "requestBody" in schema["paths"][path]["post"], path
