"""EmbeddingService: serves /v1/embeddings for one model through the fair batcher, with its input limits.

Limits, each a 400 that names the numbers (param `input`; `truncate_prompt_tokens` for a bad value of
it): at most MAX_INPUTS inputs; each input at most the model's max_seq_length tokens (counting
[CLS]/[SEP]) unless the request sets vLLM's `truncate_prompt_tokens` (-1: cut to the model's limit; k in
1..limit: cut to k tokens); and at most `max_request_tokens` tokens in all, counted after any truncation
(what would be computed). Texts are tokenized on a thread before the request joins a batch, so a large
request never blocks the loop while it is checked.

`dimensions` (OpenAI's): a Matryoshka-trained model (models/local.py `matryoshka_dimensions`) cuts each
vector to its first `dimensions` values and, when its vectors are normalized, normalizes them again; any
other model takes only its native size (a no-op), else a 400 naming `dimensions`.
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import torch
import torch.nn.functional as F
from fastapi.responses import Response

from infercloud.contracts import ModelState
from infercloud.engine.embedding_batcher import EmbeddingBatcher
from infercloud.engine.embedding_engine import EmbeddingEngine, InputTooLongError
from infercloud.models.local import LocalModel
from infercloud.openai.errors import bad_request
from infercloud.openai.protocol import EmbeddingRequest
from infercloud.worker.metrics import ServerMetrics

MAX_INPUTS = 2048  # per request, as OpenAI
MAX_REQUEST_TOKENS = 300_000  # per request, as OpenAI (config: ModelSpec.max_request_tokens)


class EmbeddingService:
    def __init__(self, name: str, model_dir, metrics: ServerMetrics, max_batch_size: int, max_wait_ms: float,
                 device: str = "auto", dtype: str = "float32", max_request_tokens: int = MAX_REQUEST_TOKENS):
        if max_request_tokens < 1:
            raise ValueError(f"max_request_tokens must be at least 1, got {max_request_tokens}")
        self.name = name
        self.engine = EmbeddingEngine(model_dir, device=device, max_batch_size=max_batch_size, dtype=dtype)
        self.batcher = EmbeddingBatcher(self.engine, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
        self.metrics = metrics
        self.max_request_tokens = max_request_tokens
        self.matryoshka = LocalModel.open(model_dir).matryoshka_dimensions
        self.in_flight = 0

    async def embed(self, body: EmbeddingRequest) -> Response:
        inputs = _input_list(body.input)
        truncate_to = self._truncate_to(body.truncate_prompt_tokens)
        size = self._cut_to(body.dimensions)
        self.in_flight += 1
        try:
            seqs = await asyncio.to_thread(self._prepare, inputs, truncate_to)
            vectors, counts, device_s = await self.batcher.submit(seqs)
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
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts), "device_seconds": round(device_s, 6)}
        normalized = self.engine.config.normalize   # 2,048 vectors: ~0.4 s of JSON, so on a thread
        content = await asyncio.to_thread(lambda: _render(_cut(vectors, size, normalized), body, usage))
        return Response(content, media_type="application/json")

    def _truncate_to(self, truncate_prompt_tokens: int | None) -> int | None:
        """The token count each input is cut to (None: not cut); a 400 for a value vLLM would refuse too."""
        limit = self.engine.max_seq_length
        if truncate_prompt_tokens is None:
            return None
        if truncate_prompt_tokens == -1:
            return limit
        if not 1 <= truncate_prompt_tokens <= limit:
            raise bad_request(f"'truncate_prompt_tokens' must be -1 (the model's limit) or from 1 to {limit}, "
                              f"got {truncate_prompt_tokens}.", param="truncate_prompt_tokens")
        return truncate_prompt_tokens

    def _cut_to(self, dimensions: int | None) -> int | None:
        """The size each vector is cut to (None: its native size); a 400 for a size the model was not trained for."""
        native = self.engine.dim
        if dimensions is None or dimensions == native:
            return None
        if self.matryoshka is None:
            raise bad_request(f"The model `{self.name}` is not trained for reduced dimensions (it is not a Matryoshka "
                              f"model): 'dimensions' must be left out or equal its native size, {native}; got "
                              f"{dimensions}.", param="dimensions", code="unsupported_dimensions")
        if dimensions > native or (self.matryoshka and dimensions not in self.matryoshka):
            sizes = ", ".join(map(str, self.matryoshka)) if self.matryoshka else f"1 to {native}"
            raise bad_request(f"'dimensions' is {dimensions}; the model `{self.name}` takes {sizes}.",
                              param="dimensions", code="unsupported_dimensions")
        return dimensions

    def _prepare(self, inputs: list, truncate_to: int | None) -> list[list[int]]:
        """On a thread: the model input of every input, checked against the per-input and per-request limits."""
        try:
            seqs = self.engine.prepare(inputs, truncate_to)
        except InputTooLongError as exc:
            raise bad_request(f"Input {exc.index} has {exc.num_tokens} tokens, more than this model's limit of "
                              f"{exc.limit} tokens per input (counting [CLS] and [SEP]). Shorten it, or set "
                              "'truncate_prompt_tokens' (-1 cuts every input to the limit).", param="input") from exc
        except ValueError as exc:
            raise bad_request(f"Invalid 'input': {exc}.", param="input") from exc
        total = sum(len(ids) for ids in seqs)
        if total > self.max_request_tokens:
            raise bad_request(f"'input' has {total} tokens in all; at most {self.max_request_tokens} are allowed "
                              "per request. Split it into smaller requests.", param="input")
        return seqs

    def state(self) -> ModelState:
        stats = self.batcher.stats()
        return ModelState(kind="embedding", in_flight=self.in_flight, dim=self.engine.dim,
                          max_model_len=self.engine.max_seq_length, batches=stats.batches_run,
                          mean_batch_size=stats.mean_batch_size, inputs_dropped=stats.inputs_dropped)

    def shutdown(self) -> None:
        """Stop the batcher (its task, or with no running loop, nothing: the task died with its loop)."""
        try:
            self._stopping = asyncio.get_running_loop().create_task(self.batcher.stop())
        except RuntimeError:
            pass


def _input_list(inputs) -> list:
    """The request's inputs as a list of texts or of token-id lists; a 400 when empty or too many."""
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not inputs:
        raise bad_request("'input' must not be empty.", param="input")
    if len(inputs) > MAX_INPUTS:
        raise bad_request(f"'input' has {len(inputs)} items; at most {MAX_INPUTS} are allowed.", param="input")
    return inputs


def _cut(vectors: torch.Tensor, size: int | None, normalized: bool) -> torch.Tensor:
    """Each vector's first `size` values (Matryoshka), at unit length again when the model's vectors are."""
    if size is None:
        return vectors
    cut = vectors[:, :size].float()
    return F.normalize(cut, p=2, dim=-1) if normalized else cut


def _render(vectors, body: EmbeddingRequest, usage: dict) -> bytes:
    """The response body, as JSON bytes (on a thread: never on the event loop)."""
    array = vectors.float().cpu().numpy()
    data = [{"object": "embedding", "index": i, "embedding": _encode(row, body.encoding_format)}
            for i, row in enumerate(array)]
    return json.dumps({"object": "list", "data": data, "model": body.model, "usage": usage},
                      separators=(",", ":")).encode()


def _encode(row: np.ndarray, fmt: str):
    if fmt == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode()
    return row.tolist()
