"""The collections API's request bodies as pydantic models: unknown fields and bad values are 400s.

Limits: a name of 1-64 characters [A-Za-z0-9_.-]; a document id of 1-128 [A-Za-z0-9_.:@-] (it is a path
segment); metadata of at most 16 pairs, keys of at most 64 characters, string values of at most 512 (OpenAI's
limits), a collection's values strings, a document's strings, numbers or booleans; at most 1,000 documents
per call; a query of at most 8,000 characters; top_k 1-100; a filter of at most 16 fields, `$in` lists of
1-100 values.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
MAX_DOCUMENTS_PER_CALL = 1000
MAX_TOP_K = 100
MAX_VECTOR_DIMENSIONS = 8192
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

    @model_validator(mode="after")
    def _less_than_window(self) -> "ChunkingBody":   # after: the default overlap is held to it too
        if self.overlap_words >= self.max_words:
            raise ValueError(f"overlap_words must be less than max_words ({self.max_words}), "
                             f"got {self.overlap_words}")
        return self


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
    query: str | None = Field(default=None, min_length=1, max_length=MAX_QUERY_CHARS)
    vector: list[float] | None = Field(default=None, min_length=1, max_length=MAX_VECTOR_DIMENSIONS)
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    filter: dict[MetadataKey, FilterValue] | None = Field(default=None, max_length=MAX_METADATA_PAIRS)
    unique_documents: bool = False

    @model_validator(mode="after")
    def _query_or_vector(self) -> "SearchRequest":   # a vector: the caller embedded the query itself
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of 'query' (text, embedded here) and 'vector' (already embedded)")
        return self


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
