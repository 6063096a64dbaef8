"""EmbeddingService: serves /v1/embeddings for one model through the dynamic batcher."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from infercloud.engine.embedding_batcher import EmbeddingBatcher
from infercloud.engine.embedding_engine import EmbeddingEngine
from infercloud.openai.errors import bad_request
from infercloud.openai.protocol import EmbeddingRequest
from infercloud.worker.metrics import ServerMetrics

MAX_INPUTS = 2048  # per request, as OpenAI


class EmbeddingService:
    def __init__(self, name: str, model_dir, metrics: ServerMetrics, max_batch_size: int, max_wait_ms: float,
                 device: str = "auto", dtype: str = "float32"):
        self.name = name
        self.engine = EmbeddingEngine(model_dir, device=device, max_batch_size=max_batch_size, dtype=dtype)
        self.batcher = EmbeddingBatcher(self.engine, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
        self.metrics = metrics
        self.in_flight = 0

    async def embed(self, body: EmbeddingRequest) -> dict:
        inputs = body.input
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not inputs:
            raise bad_request("'input' must not be empty.", param="input")
        if len(inputs) > MAX_INPUTS:
            raise bad_request(f"'input' has {len(inputs)} items; at most {MAX_INPUTS} are allowed.", param="input")
        self.in_flight += 1
        try:
            if isinstance(inputs[0], str):
                vectors, counts, device_s = await self.batcher.embed(inputs)
            else:
                try:
                    self.engine.validate(inputs)
                except ValueError as exc:
                    raise bad_request(str(exc), param="input") from exc
                vectors, counts, device_s = await self.batcher.embed_tokens(inputs)
            status = "ok"
        except asyncio.CancelledError:
            status = "aborted"
            raise
        except Exception:
            status = "error"
            raise
        finally:
            self.in_flight -= 1
            self.metrics.request_done(self.name, "embeddings", status)
        self.metrics.observe_embeddings(self.name, sum(counts))
        array = vectors.float().cpu().numpy()
        data = [{"object": "embedding", "index": i, "embedding": _encode(row, body.encoding_format)}
                for i, row in enumerate(array)]
        return {"object": "list", "data": data, "model": body.model,
                "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts),
                          "device_seconds": round(device_s, 6)}}

    def state(self) -> dict:
        stats = self.batcher.stats()
        return {"kind": "embedding", "loaded": True, "in_flight": self.in_flight, "dim": self.engine.dim,
                "max_model_len": self.engine.max_seq_length, "batches": stats.batches_run,
                "mean_batch_size": stats.mean_batch_size}

    def shutdown(self) -> None:
        """Stop the batcher (its task, or with no running loop, nothing: the task died with its loop)."""
        try:
            self._stopping = asyncio.get_running_loop().create_task(self.batcher.stop())
        except RuntimeError:
            pass


def _encode(row: np.ndarray, fmt: str):
    if fmt == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode()
    return row.tolist()
