"""The wire shapes of OpenAI's Responses API (POST /v1/responses) as pydantic models; unknown fields are 400.

Only what infercloud serves is accepted: text input (strings, `input_text`/`output_text` parts), function
tools in the Responses flat shape, function calls and their outputs as input items, and `text.format`
text / json_object / json_schema. Anything else (images, files, built-in tools, reasoning, ...) is a 400
naming the field, never silently ignored. infercloud/responses/translate.py maps these onto a chat
completion and back.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

MAX_METADATA_PAIRS = 16                   # OpenAI's limits on `metadata`
MAX_METADATA_KEY, MAX_METADATA_VALUE = 64, 512


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputText(_Strict):
    type: Literal["input_text"]
    text: str


class OutputText(_Strict):
    """An assistant's text, as a Response's output carries it (and a client may send it back as input)."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list, max_length=0)   # infercloud makes none
    logprobs: list[dict[str, Any]] | None = None


ContentPart = Annotated[InputText | OutputText, Field(discriminator="type")]


class MessageItem(_Strict):
    """`{role, content}` (OpenAI's EasyInputMessage), or a message item (`type: "message"`, with its id and
    status when it is an earlier response's output sent back)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = Field(default=None, max_length=100)
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionCallItem(_Strict):
    """A call the model made (an earlier response's output), sent back with its output."""

    type: Literal["function_call"]
    call_id: str = Field(max_length=100)
    name: str
    arguments: str
    id: str | None = Field(default=None, max_length=100)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(_Strict):
    """What the client's function returned for a call (`call_id`)."""

    type: Literal["function_call_output"]
    call_id: str = Field(max_length=100)
    output: str
    id: str | None = Field(default=None, max_length=100)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


def _item_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("type", "message")
    return getattr(value, "type", None)


InputItem = Annotated[Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")] |
                      Annotated[FunctionCallOutputItem, Tag("function_call_output")], Discriminator(_item_kind)]


class FunctionTool(_Strict):
    """A function tool in the Responses flat shape (chat nests the same fields under `function`)."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    name: str


class TextFormatText(_Strict):
    type: Literal["text"]


class TextFormatJSONObject(_Strict):
    type: Literal["json_object"]


class TextFormatJSONSchema(_Strict):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TextConfig(_Strict):
    format: Annotated[TextFormatText | TextFormatJSONObject | TextFormatJSONSchema,
                      Field(discriminator="type")] | None = None


class ResponsesRequest(_Strict):
    """POST /v1/responses."""

    model: str
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[Annotated[str, Field(max_length=MAX_METADATA_KEY)],
                   Annotated[str, Field(max_length=MAX_METADATA_VALUE)]] | None = \
        Field(default=None, max_length=MAX_METADATA_PAIRS)
    user: str | None = None
    service_tier: str | None = None   # infercloud's tiers (interactive, standard, batch) or OpenAI's names


RESPONSES_BODIES: dict[str, type[BaseModel]] = {"/v1/responses": ResponsesRequest}   # path -> its JSON body
