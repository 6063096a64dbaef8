"""The calls a gateway's new rooms (collections, pipelines, the semantic cache) make to models: through
`Gateway.handle` itself, so each is authenticated with the caller's key, admitted against its limits, routed,
retried and metered like a request of the client's own (under the pipeline's request id and stage)."""

from __future__ import annotations

import json
import uuid

from infercloud.collections.embed import CallContext, Embed, Embedded, embedded_from, embeddings_body
from infercloud.gateway.facts import upstream_for

CHAT = "/v1/chat/completions"


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
        return await gateway.handle(ctx.request, CHAT, body=body, request_id=ctx.request_id,
                                    stage=ctx.stage, deadline_s=deadline_s)
    return chat


def gateway_judge(gateway):
    """The evaluation's judge (infercloud/evaluation/): the operator's own call, not a tenant's, so neither
    admitted against a tenant's limits nor billed to one; routed and retried like any chat completion, at
    the tier its body names (the lowest: `batch`), so the engine serves user traffic first."""
    async def judge(body: dict) -> dict:
        facts = gateway.facts.parse(body, CHAT, 0, None, None, None)
        headers = {"Content-Type": "application/json", "X-Request-Id": f"judge-{uuid.uuid4().hex}"}
        response = await gateway.proxy.unary(gateway.planner.plan(facts), CHAT, upstream_for(facts, metered=False),
                                             headers)
        if response.status_code != 200:
            raise RuntimeError(f"the judge's answer was HTTP {response.status_code}")
        return json.loads(bytes(response.body))
    return judge
