"""Server-sent events framing in OpenAI's style: `data: {json}` events and a final `data: [DONE]`."""

from __future__ import annotations

import json


def sse_event(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def sse_done() -> str:
    return "data: [DONE]\n\n"
