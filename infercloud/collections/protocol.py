"""The collections API's request bodies as pydantic models: unknown fields and bad values are 400s.

Limits: a name of 1-64 characters [A-Za-z0-9_.-]; a document id of 1-128 [A-Za-z0-9_.:@-] (it is a path
segment); metadata of at most 16 pairs, keys of at most 64 characters, string values of at most 512 (OpenAI's
limits), a collection's values strings, a document's strings, numbers or booleans; at most 1,000 documents
per call; a query of at most 8,000 characters; top_k 1-100; a filter of at most 16 fields, `$in` lists of
1-100 values.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
MAX_DOCUMENTS_PER_CALL = 1000
MAX_TOP_K = 100
MAX_QUERY_CHARS = 8000
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512

MetadataKey = Annotated[str, Field(min_length=1, max_length=MAX_METADATA_KEY)]
MetadataString = Annotated[str, Field(max_length=MAX_METADATA_VALUE)]
Scalar = StrictBool | StrictInt | StrictFloat | MetadataString


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChunkingBody(_Strict):
    max_words: int = Field(default=200, ge=1, le=4096)
    overlap_words: int = Field(default=40, ge=0)

    @field_validator("overlap_words")
    @classmethod
    def _less_than_window(cls, value: int, info) -> int:
        max_words = info.data.get("max_words")
        if max_words is not None and value >= max_words:
            raise ValueError(f"must be less than max_words ({max_words})")
        return value


class CreateCollectionRequest(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    embedding_model: str | None = Field(default=None, min_length=1, max_length=200)
    chunking: ChunkingBody = Field(default_factory=ChunkingBody)
    metadata: dict[MetadataKey, MetadataString] | None = Field(default=None, max_length=MAX_METADATA_PAIRS)


class DocumentBody(_Strict):
    id: str | None = Field(default=None, pattern=DOCUMENT_ID_PATTERN)
    text: str = Field(min_length=1)
    metadata: dict[MetadataKey, Scalar] | None = Field(default=None, max_length=MAX_METADATA_PAIRS)

    @field_validator("text")
    @classmethod
    def _has_a_word(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must hold at least one word")
        return value


class AddDocumentsRequest(_Strict):
    documents: list[DocumentBody] = Field(min_length=1, max_length=MAX_DOCUMENTS_PER_CALL)


class InValues(_Strict):
    in_: list[Scalar] = Field(alias="$in", min_length=1, max_length=100)


FilterValue = Scalar | InValues


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    filter: dict[MetadataKey, FilterValue] | None = Field(default=None, max_length=MAX_METADATA_PAIRS)
    unique_documents: bool = False


class FilterBody(_Strict):
    """A filter alone, as the in-process search takes it (so its errors name `filter` too)."""

    filter: dict[MetadataKey, FilterValue] | None = Field(default=None, max_length=MAX_METADATA_PAIRS)


def filter_json(value: dict[str, FilterValue] | None) -> dict | None:
    """A validated filter back in its wire shape ({field: value | {"$in": [...]}})."""
    if value is None:
        return None
    return {k: v.model_dump(by_alias=True) if isinstance(v, InValues) else v for k, v in value.items()}


COLLECTIONS_BODIES: dict[str, type[BaseModel]] = {   # path -> its JSON body (openapi.json)
    "/v1/collections": CreateCollectionRequest,
    "/v1/collections/{name}/documents": AddDocumentsRequest,
    "/v1/collections/{name}/search": SearchRequest,
}
