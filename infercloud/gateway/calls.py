"""The calls a gateway's new rooms (collections, pipelines, the semantic cache) make to models: through
`Gateway.handle` itself, so each is authenticated with the caller's key, admitted against its limits, routed,
retried and metered like a request of the client's own (under the pipeline's request id and stage)."""

from __future__ import annotations

from infercloud.collections.embed import CallContext, Embed, Embedded, embedded_from, embeddings_body


def gateway_embed(gateway) -> Embed:
    async def embed(ctx: CallContext, model: str, texts: list[str]) -> Embedded:
        response = await gateway.handle(ctx.request, "/v1/embeddings", body=embeddings_body(model, texts),
                                        request_id=ctx.request_id, stage=ctx.stage)
        return embedded_from(response)
    return embed


def gateway_chat(gateway):
    """A pipeline's chat call: a chat completion through `Gateway.handle`, with the first-token deadline the
    engine orders its work by."""
    async def chat(ctx: CallContext, body: dict, deadline_s: float | None):
        return await gateway.handle(ctx.request, "/v1/chat/completions", body=body, request_id=ctx.request_id,
                                    stage=ctx.stage, deadline_s=deadline_s)
    return chat
