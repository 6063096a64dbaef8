"""The collections API's failures, each an OpenAI-style error with its status and code.

A collection is unknown to every owner but its own, so `not_found` is the whole answer for another owner's
collection too: nothing in it tells the two apart.
"""

from __future__ import annotations

from infercloud.openai.errors import APIError


def not_found(name: str) -> APIError:
    return APIError(404, f"Collection '{name[:100]}' not found.", code="collection_not_found")


def document_not_found(name: str, doc_id: str) -> APIError:
    return APIError(404, f"Document '{doc_id[:128]}' not found in collection '{name[:100]}'.",
                    code="document_not_found")


def collection_exists(name: str) -> APIError:
    return APIError(409, f"A collection named '{name}' already exists.", param="name", code="collection_exists")


def write_conflict() -> APIError:
    """The collection was deleted, or another process stored the same new document id, meanwhile."""
    return APIError(409, "The collection changed while the documents were stored; retry.", code="conflict")


def embedding_size_changed(model: str, dim: int) -> APIError:
    return APIError(409, f"The embedding model `{model}` now returns vectors of another size than the {dim} this "
                    "collection holds.", code="embedding_size_changed")


def store_unavailable() -> APIError:
    return APIError(503, "The collection store is unavailable; retry shortly.", type="overloaded_error",
                    code="store_unavailable", headers={"Retry-After": "1"})
