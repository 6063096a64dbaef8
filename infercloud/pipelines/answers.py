"""Reading the answers of a pipeline's calls: a chat completion's JSON, a chat stream's chunks, their errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.responses import Response

from infercloud.openai.errors import APIError, error_from_answer


def chat_answer(response: Response) -> dict:
    body = json.loads(bytes(response.body))
    if response.status_code != 200:
        raise error_from_answer(response.status_code, body, "The chat model failed.")
    return body


def chat_stream_error(response: Response) -> APIError:
    return error_from_answer(response.status_code, json.loads(bytes(response.body)), "The chat model failed.")


async def sse_chunks(response) -> AsyncIterator[dict]:
    """The JSON chunks of an SSE answer (a StreamingResponse), until `[DONE]`; an error event is raised."""
    buffer = ""
    iterator = response.body_iterator
    try:
        async for piece in iterator:
            buffer += piece.decode() if isinstance(piece, (bytes, bytearray)) else piece
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                for line in event.splitlines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:   # the model's stream broke after it began
                        raise error_from_answer(502, chunk, "The chat model's stream failed.")
                    yield chunk
    finally:
        if hasattr(iterator, "aclose"):
            await iterator.aclose()


async def prepend(first: dict, rest: AsyncIterator[dict]) -> AsyncIterator[dict]:
    yield first
    async for item in rest:
        yield item
