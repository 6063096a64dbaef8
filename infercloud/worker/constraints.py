"""Which grammar a request asks for: `response_format`, vLLM's `structured_outputs` and `guided_*`, or tools.

Tools are decoded under xgrammar structural tags: `auto` leaves text free until `<tool_call>`, then holds
the call to one of the tools and its parameter schema; `required` allows only calls (at least one), a
named choice only that function. Without `parallel_tool_calls` a reply stops after its first call.

At most one may constrain a reply; a second is a 400 naming it. `response_format: {"type": "text"}` asks for
nothing. A JSON schema is held exactly (xgrammar's strict mode: no properties beyond the schema's), so a
reply that ends by itself always validates; one cut by max_tokens ends with finish_reason "length".
"""

from __future__ import annotations

import json

from infercloud.engine.structured.spec import StructuredSpec
from infercloud.openai.errors import bad_request
from infercloud.openai.protocol import ChatCompletionRequest, ChatTool, CompletionRequest, NamedToolChoice
from infercloud.openai.tool_calls import ARGS_PREFIX, CALL_CLOSE, CALL_OPEN, NAME_PREFIX, effective_tool_choice


def requested_spec(body: ChatCompletionRequest | CompletionRequest) -> StructuredSpec | None:
    found = [s for s in (_response_format(body), _structured_outputs(body), *_guided(body), _tools(body)) if s]
    if len(found) > 1:
        raise bad_request(f"Only one output constraint may be given; got {found[0].param} and {found[1].param}.",
                          param=found[1].param)
    return found[0] if found else None


def tool_choice(body: ChatCompletionRequest):
    return effective_tool_choice(body.tools, body.tool_choice)


def _response_format(body) -> StructuredSpec | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return StructuredSpec("json_object", param="response_format")
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise bad_request("response_format of type json_schema needs json_schema.schema.",
                          param="response_format.json_schema")
    return StructuredSpec("json_schema", json.dumps(fmt.json_schema.schema_), param="response_format")


def _structured_outputs(body) -> StructuredSpec | None:
    so = body.structured_outputs
    if so is None:
        return None
    given = [(k, v) for k, v in (("json", so.json_), ("regex", so.regex), ("choice", so.choice),
                                 ("grammar", so.grammar), ("structural_tag", so.structural_tag),
                                 ("json_object", so.json_object or None)) if v is not None]
    if len(given) != 1:
        raise bad_request("structured_outputs takes exactly one of json, regex, choice, grammar, json_object, "
                          "structural_tag.", param="structured_outputs")
    return _spec(*given[0], param="structured_outputs")


def _guided(body) -> list[StructuredSpec | None]:
    return [_spec(kind, getattr(body, f"guided_{kind}"), param=f"guided_{kind}") if getattr(body, f"guided_{kind}")
            is not None else None for kind in ("json", "regex", "choice", "grammar")]


def _spec(kind: str, value, param: str) -> StructuredSpec:
    if kind == "json":
        return StructuredSpec("json_schema", value if isinstance(value, str) else json.dumps(value), param=param)
    if kind == "json_object":
        return StructuredSpec("json_object", param=param)
    if kind == "choice":
        return StructuredSpec("choice", json.dumps(value), param=param)
    return StructuredSpec(kind, value, param=param)


def _tools(body) -> StructuredSpec | None:
    if not isinstance(body, ChatCompletionRequest):
        return None
    choice = tool_choice(body)
    if choice != "none" and not body.tools:
        raise bad_request(f"tool_choice {_choice_name(choice)!r} needs tools.", param="tool_choice")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in {t.function.name for t in body.tools}:
        raise bad_request(f"tool_choice names {choice.function.name!r}, which is not among the tools.",
                          param="tool_choice")
    return tool_spec(body.tools or [], choice, body.parallel_tool_calls is not False)


def _choice_name(choice) -> str:
    return choice.function.name if isinstance(choice, NamedToolChoice) else choice


def tool_spec(tools: list[ChatTool], choice: str | NamedToolChoice, parallel: bool) -> StructuredSpec | None:
    """The structural tag the reply is decoded under; None for `none`."""
    if choice == "none":
        return None
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == choice.function.name]
    tags = [{"type": "tag", "begin": CALL_OPEN + NAME_PREFIX + t.function.name + ARGS_PREFIX,
             "content": {"type": "json_schema", "json_schema": t.function.parameters or {"type": "object"},
                         "max_whitespace_cnt": 1},
             "end": CALL_CLOSE} for t in tools]
    if choice == "auto":
        fmt = {"type": "triggered_tags", "triggers": [CALL_OPEN], "tags": tags, "stop_after_first": not parallel}
    else:
        fmt = {"type": "tags_with_separator", "tags": tags, "separator": "\n", "at_least_one": True,
               "stop_after_first": not parallel or isinstance(choice, NamedToolChoice)}
    return StructuredSpec("structural_tag", json.dumps({"type": "structural_tag", "format": fmt}), param="tools")
