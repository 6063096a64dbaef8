"""The gateway's side of continuous evaluation (infercloud/evaluation/): which answers are handed over.

An answer of a target with an evaluation (a served model, or a pipeline called as a model) is drawn as it
leaves the gateway: after the policies, so what is scored is what the client got. A drawn JSON answer is
submitted with its bytes; the Sample is parsed off the request path, by the evaluation's task. A drawn
stream is tapped: its chunks are kept as they go out and, at [DONE], added up to the answer they make
(cache/replay.collect_stream) and submitted. Answers that are not 200, and streams that end early or in
an error, are not scored. Undrawn answers cost one random draw.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import Response, StreamingResponse

from infercloud.cache.replay import IncompleteStream, collect_stream
from infercloud.evaluation.sample import Sample, sample_from_chat
from infercloud.evaluation.service import Evaluation
from infercloud.store.database import utcnow


class Sampler:
    def __init__(self, evaluation: Evaluation):
        self.evaluation = evaluation

    def watch(self, target: str, body: dict, tenant_id: int | None, request_id: str, response: Response) -> Response:
        if response.status_code != 200 or not self.evaluation.draw(target):
            return response
        at = utcnow()
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._tap(target, body, tenant_id, request_id, at, response,
                                               response.body_iterator)
            return response
        raw = bytes(response.body)

        def make() -> Sample:
            return sample_from_chat(target, body, json.loads(raw), tenant_id, request_id, at)

        self.evaluation.submit(target, make)
        return response

    async def _tap(self, target: str, body: dict, tenant_id: int | None, request_id: str, at,
                   response: StreamingResponse, events: AsyncIterator) -> AsyncIterator:
        chunks: list[dict] = []
        buffer = ""
        async for event in events:
            yield event
            buffer += event.decode() if isinstance(event, (bytes, bytearray, memoryview)) else event
            *blocks, buffer = buffer.split("\n\n")
            for block in blocks:
                if block.strip() == "data: [DONE]":
                    if not any(isinstance(c.get("usage"), dict) for c in chunks):   # the client asked for none
                        relayed = getattr(getattr(response, "relay", None), "chunks", None)
                        chunks.append({"choices": [], "usage": getattr(relayed, "usage", None) or {}})
                    self._submit(target, body, tenant_id, request_id, at, chunks)
                elif block.startswith("data: "):
                    try:
                        chunks.append(json.loads(block[6:]))
                    except ValueError:
                        return   # not a stream of JSON chunks: not scored (the client still got every event)

    def _submit(self, target: str, body: dict, tenant_id: int | None, request_id: str, at,
                chunks: list[dict]) -> None:
        def make() -> Sample:
            try:
                answer = collect_stream(chunks, at.timestamp()).body
            except IncompleteStream:
                answer = {}
            return sample_from_chat(target, body, answer, tenant_id, request_id, at)

        self.evaluation.submit(target, make)
