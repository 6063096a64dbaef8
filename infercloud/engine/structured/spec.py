"""StructuredSpec: what a request's output must match, as the engine receives it (no grammar library here).

Kinds: `json_schema` (value: the schema as JSON text), `json_object` (any JSON object), `regex`, `choice`
(value: a JSON list of strings), `grammar` (EBNF, xgrammar's dialect of GBNF) and `structural_tag` (value:
xgrammar's structural-tag JSON: free text with tagged, schema-checked regions, which is how tool calls are
decoded). `param` names the request field it came from, so a bad schema is a 400 that points at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["json_schema", "json_object", "regex", "choice", "grammar", "structural_tag"]


@dataclass(frozen=True)
class StructuredSpec:
    kind: Kind
    value: str = ""
    param: str = "response_format"
