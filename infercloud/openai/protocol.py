"""Request bodies of the OpenAI API as pydantic models; unknown fields are rejected, never ignored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infercloud.openai.errors import APIError, bad_request


def max_new_tokens(asked: int | None, max_model_len: int | None, longest_prompt: int) -> int | None:
    """How many tokens a completion may generate, one rule for the worker that enforces it and the gateway
    that counts it: what the request asks for, else what the model's context window leaves after its
    longest prompt; None when neither is known."""
    if asked is not None:
        return asked
    return max(max_model_len - longest_prompt, 1) if max_model_len is not None else None


def validation_error(exc: ValidationError) -> APIError:
    """A body that failed its model, as OpenAI's 400 naming the first bad field (`param`)."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    field = loc[0] if loc else None
    if err["type"] == "extra_forbidden":
        return bad_request(f"Unsupported field: '{'.'.join(loc)}'. infercloud does not support it.", param=field,
                           code="unsupported_field")
    if err["type"] == "missing":
        return bad_request(f"Missing required field: '{'.'.join(loc)}'.", param=field)
    return bad_request(f"Invalid value for '{'.'.join(loc)}': {err['msg']}.", param=field)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str                          # JSON text, as OpenAI sends it


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None   # an assistant's calls, replayed in a history
    tool_call_id: str | None = None            # a tool message: the call it answers
    refusal: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False    # vLLM's: usage (so far) on every chunk


class FunctionDef(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict | None = None          # a JSON schema of the arguments object
    strict: bool | None = None


class ChatTool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class _FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: _FunctionName


class JSONSchemaFormat(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(default="response", pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StructuredOutputs(_Strict):
    """vLLM's `structured_outputs`: exactly one constraint."""

    json_: dict | str | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _SamplingFields(_Strict):
    """Fields shared by chat and completions, including vLLM's extra sampling fields.

    The ranges are OpenAI's, so /openapi.json tells clients what the engine (SamplingParams) accepts.
    """

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    seed: int | None = Field(default=None, ge=-2**63, le=2**63 - 1)   # OpenAI's: an int64
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    min_tokens: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None
    return_token_ids: bool | None = None    # vLLM's: prompt_token_ids and each choice's token_ids in the response
    resume_token_ids: list[int] | None = None  # infercloud's: continue a stream another replica began (n == 1)
    priority: int = 0                       # vLLM's: lower is scheduled first (the gateway sets it from the tier)
    cache_salt: str | None = None           # vLLM's: prefix-cache blocks are shared only among equal salts
    deadline_s: float | None = Field(default=None, gt=0, le=86400)  # infercloud's: the first token is due this
                                            # long after arrival; earliest due first within a priority class
    logit_bias: dict[str, float] | None = None   # token id (as text) -> bias in [-100, 100]
    stop_token_ids: list[int] | None = None      # vLLM's
    service_tier: str | None = None              # echoed; the gateway sets the tier it resolved
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None   # vLLM's; and its older guided_* names:
    guided_json: dict | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_decoding_backend: Literal["xgrammar", "auto"] | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: Annotated[list[ChatTool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=128)] | list[int] \
        | Annotated[list[list[int]], Field(min_length=1, max_length=128)]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt (OpenAI's batch: a list of texts or of token-id lists)."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p) if p else [p]


class EmbeddingRequest(_Strict):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    truncate_prompt_tokens: int | None = None   # vLLM's: -1 cuts each input to the model's limit, k to k tokens
    dimensions: int | None = Field(default=None, ge=1)   # OpenAI's: Matryoshka models cut (and renormalize)


USAGE_KEY_HEADER = "X-Infercloud-Usage-Key"   # the gateway's key for a request's usage on a worker
                                              # (GET /internal/usage/{key}); else its X-Request-Id

API_BODIES: dict[str, type[BaseModel]] = {"/v1/chat/completions": ChatCompletionRequest,
                                          "/v1/completions": CompletionRequest,
                                          "/v1/embeddings": EmbeddingRequest}   # path -> its JSON body
