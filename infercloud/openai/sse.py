"""Server-sent events framing in OpenAI's style: `data: {json}` events and a final `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse


def sse_event(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def sse_done() -> str:
    return "data: [DONE]\n\n"


class ClosingStream(StreamingResponse):
    """A stream made from another (a translated or re-framed chat stream): however it ends (even before its
    body starts), the stream under it is closed too, which ends its request (the engine's, or the gateway
    relay's with its metering)."""

    def __init__(self, inner: AsyncIterator, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for iterator in (self.body_iterator, self.inner):
                close = getattr(iterator, "aclose", None)
                if close is not None:
                    await close()
