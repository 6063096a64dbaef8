"""Seeded generators of small JSON schemas and tool sets, for the structured-output and tool-call tests.

Every schema is an object at the root (what `response_format: json_schema` and a function's `parameters`
take) built from: nested objects, arrays with minItems/maxItems, string enums, integers and numbers with
minimum/maximum, booleans and strings with maxLength, each property required or optional, and
`additionalProperties: false` on about half the objects. They are kept small, so that a reply is short:
strings have maxLength <= 12, arrays maxItems <= 3, objects nest at most 3 deep (the root is depth 1) and
a whole schema has at most MAX_LEAVES leaves in its largest instance (`max_leaves`; MAX_TOOL_LEAVES for a
function's parameters).

The same seed always gives the same schema (`random.Random(seed)`); `schema_for(seed)` and
`tool_set_for(seed)` are what the tests call.
"""

from __future__ import annotations

import random
import string

MAX_DEPTH = 3            # objects nested at most this deep (the root object is depth 1)
MAX_STRING_LENGTH = 12
MAX_ITEMS = 3
MAX_LEAVES = 14          # leaves (scalars) in the largest instance a schema allows
MAX_TOOL_LEAVES = 8      # the same for a function's parameters (tool prompts are long already)

WORDS = ["name", "city", "count", "price", "active", "color", "tags", "size", "owner", "level", "score",
         "title", "items", "kind", "unit", "label", "limit", "rank", "ready", "stock", "zone", "note", "code",
         "depth", "speed", "mode", "year", "team", "email", "phone", "rating", "region", "status", "weight"]
ENUM_WORDS = ["red", "green", "blue", "small", "medium", "large", "north", "south", "east", "west", "low",
              "high", "open", "closed", "yes", "no", "alpha", "beta", "gamma", "on", "off", "celsius",
              "fahrenheit", "kg", "lb"]
VERBS = ["get", "set", "find", "list", "create", "update", "delete", "book", "send", "check", "convert", "order"]
NOUNS = ["weather", "flight", "user", "order", "invoice", "stock", "ticket", "hotel", "route", "email", "note",
         "price", "event", "device", "playlist", "recipe"]


def max_leaves(schema: dict) -> int:
    """Scalars in the largest instance of `schema` (optional properties and maxItems counted in)."""
    kind = schema.get("type")
    if kind == "object":
        return sum(max_leaves(s) for s in schema.get("properties", {}).values())
    if kind == "array":
        return schema["maxItems"] * max_leaves(schema["items"])
    return 1


def depth(schema: dict) -> int:
    """Objects nested in `schema` (an object with only scalars is 1; arrays add nothing)."""
    kind = schema.get("type")
    if kind == "object":
        return 1 + max((depth(s) for s in schema.get("properties", {}).values()), default=0)
    if kind == "array":
        return depth(schema["items"])
    return 0


def _scalar(rng: random.Random) -> dict:
    kind = rng.choice(["string", "string", "integer", "number", "boolean", "enum"])
    if kind == "string":
        out = {"type": "string", "maxLength": rng.randint(1, MAX_STRING_LENGTH)}
        if rng.random() < 0.3:
            out["minLength"] = rng.randint(1, out["maxLength"])
        return out
    if kind == "integer":
        low = rng.choice([-100, -10, 0, 0, 1, 10, 1900])
        return {"type": "integer", "minimum": low, "maximum": low + rng.choice([1, 5, 9, 50, 100, 1000])}
    if kind == "number":
        low = rng.choice([-1.5, 0, 0, 0.5, 10, 100])
        return {"type": "number", "minimum": low, "maximum": low + rng.choice([1, 2.5, 10, 99.5])}
    if kind == "boolean":
        return {"type": "boolean"}
    return {"type": "string", "enum": rng.sample(ENUM_WORDS, rng.randint(1, 4))}


def _value(rng: random.Random, level: int, budget: int) -> dict:
    """A property's schema, `level` being the depth of the object that holds it."""
    roll = rng.random()
    if roll < 0.2 and level < MAX_DEPTH and budget >= 2:
        return _object(rng, level + 1, budget)
    if roll < 0.4:
        items = _object(rng, level + 1, max(1, budget // MAX_ITEMS)) \
            if rng.random() < 0.35 and level < MAX_DEPTH else _scalar(rng)
        most = max(1, min(MAX_ITEMS, budget // max(1, max_leaves(items))))
        least = rng.randint(0, most)
        return {"type": "array", "items": items, "minItems": least, "maxItems": rng.randint(max(least, 1), most)}
    return _scalar(rng)


def _object(rng: random.Random, level: int, budget: int) -> dict:
    names = rng.sample(WORDS, rng.randint(1, 4 if level == 1 else 3))
    properties: dict[str, dict] = {}
    for name in names:
        left = budget - sum(max_leaves(s) for s in properties.values())
        if left < 1:
            break
        properties[name] = _value(rng, level, left)
        while max_leaves(properties[name]) > left:       # too big for what is left: a scalar instead
            properties[name] = _scalar(rng)
    required = [n for n in properties if rng.random() < 0.7]
    out: dict = {"type": "object", "properties": properties, "required": required}
    if rng.random() < 0.5:
        out["additionalProperties"] = False
    return out


def random_schema(rng: random.Random, most_leaves: int = MAX_LEAVES) -> dict:
    schema = _object(rng, 1, most_leaves)
    assert depth(schema) <= MAX_DEPTH and max_leaves(schema) <= most_leaves, schema
    return schema


def schema_for(seed: int) -> dict:
    return random_schema(random.Random(seed))


def describe(schema: dict) -> str:
    """A one-line request for an instance, naming the top-level fields (the prompt a test sends)."""
    return "Reply with a JSON object with the fields " + ", ".join(schema["properties"]) + "."


def random_tool(rng: random.Random, taken: set[str]) -> dict:
    while True:
        name = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
        if rng.random() < 0.3:
            name += "_" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=3))
        if name not in taken:
            taken.add(name)
            break
    parameters = random_schema(rng, MAX_TOOL_LEAVES)
    if rng.random() < 0.1:              # a function without arguments
        parameters = {"type": "object", "properties": {}, "required": []}
    return {"type": "function", "function": {
        "name": name, "description": f"{name.replace('_', ' ').capitalize()} given "
                                     f"{', '.join(parameters['properties']) or 'nothing'}.",
        "parameters": parameters}}


def random_tool_set(rng: random.Random) -> list[dict]:
    taken: set[str] = set()
    return [random_tool(rng, taken) for _ in range(rng.randint(1, 4))]


def tool_set_for(seed: int) -> list[dict]:
    return random_tool_set(random.Random(10_000 + seed))


def tool_schemas(tools: list[dict]) -> dict[str, dict]:
    """Function name -> its parameter schema."""
    return {t["function"]["name"]: t["function"]["parameters"] for t in tools}
