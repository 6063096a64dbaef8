"""The agent tests' own generators and checks (no server): schemas keep their bounds, and the checks that judge
the server's replies reject what they must."""

from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator, ValidationError

from tests.agents.conftest import extra_keys, free_whitespace, validate
from tests.agents.schemas import (
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_LEAVES,
    MAX_STRING_LENGTH,
    MAX_TOOL_LEAVES,
    depth,
    max_leaves,
    schema_for,
    tool_schemas,
    tool_set_for,
)


def walk(schema: dict):
    yield schema
    for sub in schema.get("properties", {}).values():
        yield from walk(sub)
    if "items" in schema:
        yield from walk(schema["items"])


def test_generated_schemas_are_valid_small_and_reproducible():
    kinds = set()
    for seed in range(300):
        schema = schema_for(seed)
        Draft202012Validator.check_schema(schema)
        assert schema == schema_for(seed)
        assert schema["type"] == "object" and depth(schema) <= MAX_DEPTH and max_leaves(schema) <= MAX_LEAVES
        for node in walk(schema):
            kinds.add("enum" if "enum" in node else node["type"])
            if node.get("type") == "string" and "enum" not in node:
                assert node["maxLength"] <= MAX_STRING_LENGTH
            if node.get("type") == "array":
                assert node["minItems"] <= node["maxItems"] <= MAX_ITEMS
            if node.get("type") in ("integer", "number"):
                assert node["minimum"] <= node["maximum"]
            if node.get("type") == "object":
                assert set(node["required"]) <= set(node["properties"])
    assert kinds == {"object", "array", "string", "enum", "integer", "number", "boolean"}
    assert len({str(schema_for(seed)) for seed in range(300)}) == 300


def test_generated_tool_sets():
    sizes = set()
    for seed in range(50):
        tools = tool_set_for(seed)
        sizes.add(len(tools))
        names = [t["function"]["name"] for t in tools]
        assert len(set(names)) == len(names)
        assert all(re.fullmatch(r"[a-zA-Z0-9_.-]{1,64}", n) for n in names)
        for schema in tool_schemas(tools).values():
            Draft202012Validator.check_schema(schema)
            assert max_leaves(schema) <= MAX_TOOL_LEAVES
    assert sizes == {1, 2, 3, 4}


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "object", "properties": {
    "c": {"type": "array", "items": {"type": "object", "properties": {"d": {"type": "string"}}}}}}}}


@pytest.mark.parametrize("instance", [{"a": "1"}, {"a": 1, "z": 2}, {"b": {"c": [{"d": "x", "e": 1}]}}])
def test_validate_rejects_wrong_types_and_properties_beyond_the_schema(instance):
    with pytest.raises((ValidationError, AssertionError)):
        validate(instance, SCHEMA)


def test_extra_keys_names_where():
    assert extra_keys({"a": 1, "b": {"c": [{"d": "x"}, {"q": 1}]}}, SCHEMA) == ["$.b.c[1].q"]
    validate({"a": 1, "b": {"c": [{"d": "x"}]}}, SCHEMA)


@pytest.mark.parametrize("text, bad", [
    ('{"a": 1, "b": [1, 2], "c": "x  y\\n"}', []),
    ('{"a":1}', []),
    ('{ "a": 1}', [1]),
    ('{"a":  1}', [5, 6]),
    ('{"a": 1}\n', [8]),
    ('{"a": [1,\n2]}', [9]),
])
def test_free_whitespace(text, bad):
    assert free_whitespace(text) == bad
