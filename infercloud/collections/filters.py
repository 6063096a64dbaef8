"""Metadata filters: which documents a search may return, answered from an inverted index in memory.

A filter is `{field: value | {"$in": [values]}}`; a document matches when every field holds (its metadata
has the field, equal to the value or to one of the `$in` values). Values are strings, numbers and booleans,
compared by JSON type: 1 and 1.0 are equal, `true` and 1 are not, "1" and 1 are not. MetadataIndex keeps,
per (field, value), the set of documents that have it, so a filter costs a few set operations however many
documents the collection holds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pydantic import ValidationError

from infercloud.collections.protocol import FilterBody, filter_json
from infercloud.openai.protocol import validation_error

Scalar = str | int | float | bool
ValueKey = tuple[str, object]   # a value as compared: ("b", True), ("n", 1.0), ("s", "x")


def value_key(value: Scalar) -> ValueKey:
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value))
    return ("s", value)


@dataclass(frozen=True)
class MetadataFilter:
    conditions: tuple[tuple[str, frozenset[ValueKey]], ...]   # field -> the values it may have

    @classmethod
    def parse(cls, value: dict | None) -> MetadataFilter | None:
        """A filter in its wire shape, checked (a 400 naming `filter`); None for none."""
        if value is None:
            return None
        try:
            body = FilterBody.model_validate({"filter": value})
        except ValidationError as exc:
            raise validation_error(exc) from exc
        return cls.from_json(filter_json(body.filter))

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MetadataFilter:
        """From the wire shape, already validated (collections/protocol.py `FilterValue`)."""
        conditions = []
        for field, wanted in data.items():
            values = wanted["$in"] if isinstance(wanted, dict) else [wanted]
            conditions.append((field, frozenset(value_key(v) for v in values)))
        return cls(tuple(conditions))


class MetadataIndex:
    """Document key -> its metadata, and (field, value) -> the keys of the documents that have it."""

    def __init__(self) -> None:
        self._metadata: dict[int, dict[str, Scalar]] = {}
        self._postings: dict[tuple[str, ValueKey], set[int]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._metadata)

    def put(self, doc_key: int, metadata: dict[str, Scalar]) -> None:
        self.remove(doc_key)
        self._metadata[doc_key] = dict(metadata)
        for field, value in metadata.items():
            self._postings[(field, value_key(value))].add(doc_key)

    def remove(self, doc_key: int) -> None:
        for field, value in self._metadata.pop(doc_key, {}).items():
            posting = self._postings.get((field, value_key(value)))
            if posting is not None:
                posting.discard(doc_key)
                if not posting:
                    del self._postings[(field, value_key(value))]

    def metadata(self, doc_key: int) -> dict[str, Scalar] | None:
        return self._metadata.get(doc_key)

    def select(self, where: MetadataFilter) -> set[int]:
        """The keys of the documents that match every condition (all documents for a filter without any)."""
        selected: set[int] | None = None
        for field, values in sorted(where.conditions, key=lambda c: len(c[1])):
            matching = set().union(*(self._postings.get((field, v), ()) for v in values))
            selected = matching if selected is None else selected & matching
            if not selected:
                return set()
        return set(self._metadata) if selected is None else selected
