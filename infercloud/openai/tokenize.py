"""Request bodies of vLLM's /tokenize and /detokenize as pydantic models (unknown fields rejected), and their parsing.

/tokenize takes a plain prompt ({model, prompt, add_special_tokens: true}) or chat messages rendered with the
model's template ({model, messages, tools?, add_generation_prompt: true, add_special_tokens: false}), as vLLM's
TokenizeCompletionRequest and TokenizeChatRequest; either may ask for `return_token_strs`. /detokenize takes
{model, tokens}. The answers: {"count", "max_model_len", "tokens", "token_strs"} and {"prompt"}.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from infercloud.openai.errors import bad_request
from infercloud.openai.protocol import ChatMessage, ChatTool, validation_error

MAX_TOKEN_ID = 2**31 - 1   # far above any vocabulary; bigger ids are a 400, not an overflow in the tokenizer


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizeCompletionRequest(_Strict):
    model: str
    prompt: str
    add_special_tokens: bool = True       # as the worker encodes a completion prompt
    return_token_strs: bool | None = False


class TokenizeChatRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ChatTool] | None = None    # in the prompt as a chat request with these tools puts them
    add_generation_prompt: bool = True    # as the worker renders a chat request
    add_special_tokens: bool = False      # the template adds them
    return_token_strs: bool | None = False


class TokenizeRequest(RootModel[TokenizeCompletionRequest | TokenizeChatRequest]):
    """The body of /tokenize (for /openapi.json: requests are parsed by `parse_tokenize`)."""


class DetokenizeRequest(_Strict):
    model: str
    tokens: list[Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]]


TOKENIZE_BODIES: dict[str, type[BaseModel]] = {"/tokenize": TokenizeRequest, "/detokenize": DetokenizeRequest}


def parse_tokenize(data: dict) -> TokenizeCompletionRequest | TokenizeChatRequest:
    """A /tokenize body: chat when it has `messages`, else a plain prompt; a 400 naming the first bad field."""
    if "messages" in data and "prompt" in data:
        raise bad_request("Give either 'prompt' or 'messages', not both.", param="prompt")
    return parse(TokenizeChatRequest if "messages" in data else TokenizeCompletionRequest, data)


def parse(model: type[BaseModel], data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc
