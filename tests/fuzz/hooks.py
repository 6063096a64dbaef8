"""Schemathesis hooks for the fuzz suite: the schema's `model` fields name the models the server serves.

A body whose `model` is random text only ever reaches the 404 check. Before the schema is loaded,
each request body's `model` becomes an enum of the served chat or embedding model (by endpoint),
read from INFERCLOUD_FUZZ_MODELS ("chat=NAME,embedding=NAME"): positive cases reach the engine,
negative cases still send wrong names and types.
"""

from __future__ import annotations

import os

import schemathesis

BODIES = {"ChatCompletionRequest": "chat", "CompletionRequest": "chat", "EmbeddingRequest": "embedding",
          "TokenizeCompletionRequest": "chat", "TokenizeChatRequest": "chat", "DetokenizeRequest": "chat",
          "ResponsesRequest": "chat"}


@schemathesis.hook
def before_load_schema(context, raw_schema: dict) -> None:
    models = dict(item.split("=", 1) for item in os.environ.get("INFERCLOUD_FUZZ_MODELS", "").split(",")
                  if "=" in item)
    schemas = raw_schema.get("components", {}).get("schemas", {})
    for body, kind in BODIES.items():
        if body in schemas and kind in models:
            schemas[body]["properties"]["model"] = {"type": "string", "enum": [models[kind]]}
