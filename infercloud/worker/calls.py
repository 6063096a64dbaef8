"""The calls a single box's new rooms (collections, pipelines) make to its models: in-process, to the
model's own service, as its HTTP routes would."""

from __future__ import annotations

from pydantic import ValidationError

from infercloud.collections.embed import CallContext, Embed, Embedded, embedded_from, embeddings_body
from infercloud.openai.errors import bad_request, model_not_found
from infercloud.openai.protocol import ChatCompletionRequest, EmbeddingRequest, validation_error


def worker_embed(worker) -> Embed:
    async def embed(ctx: CallContext, model: str, texts: list[str]) -> Embedded:
        kind = worker.kind(model)
        if kind is None:
            raise model_not_found(model)
        if kind != "embedding":
            raise bad_request(f"The model `{model}` is not an embedding model.", param="model")
        try:
            body = EmbeddingRequest.model_validate(embeddings_body(model, texts))
        except ValidationError as exc:
            raise validation_error(exc) from exc
        return embedded_from(await (await worker.service(model)).embed(body))
    return embed


def worker_chat(chat_service):
    """A pipeline's chat call: the chat model's service in-process, with the first-token deadline.
    `chat_service(model, endpoint)`: the model's LLMService (404/400 for an unknown or embedding model)."""
    async def chat(ctx: CallContext, body: dict, deadline_s: float | None):
        try:
            parsed = ChatCompletionRequest.model_validate({**body, "deadline_s": deadline_s})
        except ValidationError as exc:
            raise validation_error(exc) from exc
        return await (await chat_service(parsed.model, "/v1/chat/completions")).chat(parsed, ctx.request)
    return chat
