"""Ingest: documents' texts to chunks and their vectors, through the server's Embed in batches.

Each text is chunked (collections/chunking.py) and the chunks, in order, are embedded EMBED_BATCH at a time,
one Embed call per batch (on a gateway: one /v1/embeddings request each, metered to the caller). When the
embedding model refuses a chunk as longer than its input window (infercloud's embedding service says "Input i
has n tokens, more than this model's limit of L tokens"), the chunk's tokens per word r = n / words is
remembered (the largest seen in this call), every chunk of this and later batches longer than 0.9 L / r
words is cut into pieces of that many words (with the collection's overlap ratio), and the batch is sent
again; a chunk of a single word is cut by characters instead. So a text is never cut off: every word is in
a chunk the model read whole. Any other refusal reaches the client as a 400 naming `documents`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from infercloud.collections.chunking import WORD, Chunking, chunk_text, split_further
from infercloud.collections.embed import CallContext, Embed
from infercloud.openai.errors import APIError, bad_request

EMBED_BATCH = 256
MAX_ROUNDS = 64                     # refusals one batch may answer with smaller chunks before giving up
FIT = 0.9                           # of the model's limit a re-cut chunk aims at
TOO_LONG = re.compile(r"Input (\d+) has (\d+) tokens, more than this model's limit of (\d+) tokens")

Piece = tuple[int, str]             # (the document's place in the call, a chunk of its text)


@dataclass
class Ingested:
    chunks: list[list[str]]         # per document, in order
    vectors: list[list[np.ndarray]]
    prompt_tokens: int = 0
    words_cap: int | None = field(default=None, repr=False)   # learned from refusals; None: none yet

    def arrays(self, document: int, dim: int) -> np.ndarray:
        rows = self.vectors[document]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


async def embed_documents(embed: Embed, ctx: CallContext, model: str, texts: list[str],
                          chunking: Chunking) -> Ingested:
    """Chunks and unit vectors of every text (in order), and the embedding tokens they took."""
    pieces = [(i, chunk) for i, text in enumerate(texts) for chunk in chunk_text(text, chunking)]
    done = Ingested([[] for _ in texts], [[] for _ in texts])
    for start in range(0, len(pieces), EMBED_BATCH):
        batch = _cut(pieces[start:start + EMBED_BATCH], done.words_cap, chunking)
        batch, vectors = await _embed_fitting(embed, ctx, model, batch, chunking, done)
        for (document, chunk), vector in zip(batch, vectors):
            done.chunks[document].append(chunk)
            done.vectors[document].append(vector)
    return done


async def _embed_fitting(embed: Embed, ctx: CallContext, model: str, batch: list[Piece], chunking: Chunking,
                         done: Ingested) -> tuple[list[Piece], np.ndarray]:
    for _ in range(MAX_ROUNDS):
        try:
            embedded = await embed(ctx, model, [chunk for _, chunk in batch])
        except APIError as exc:
            found = TOO_LONG.search(exc.message) if exc.status == 400 else None
            if found is None or int(found.group(1)) >= len(batch):
                raise _refused(exc, model) from None
            index, tokens, limit = (int(g) for g in found.groups())
            words = len(WORD.findall(batch[index][1]))
            if words < 2:
                document, chunk = batch[index]
                batch[index:index + 1] = [(document, p) for p in split_further(chunk, FIT * limit / tokens, chunking)]
                continue
            cap = max(1, min(words - 1, math.floor(FIT * limit * words / tokens)))
            done.words_cap = cap if done.words_cap is None else min(done.words_cap, cap)
            batch = _cut(batch, done.words_cap, chunking)
            continue
        done.prompt_tokens += embedded.prompt_tokens
        return batch, embedded.vectors
    raise bad_request(f"The embedding model `{model}` kept refusing chunks as too long; create the collection with "
                      "a smaller chunking.max_words.", param="documents", code="chunk_too_long")


def _cut(batch: list[Piece], words_cap: int | None, chunking: Chunking) -> list[Piece]:
    """Every piece longer than `words_cap` words cut into pieces of at most that many (overlapping)."""
    if words_cap is None:
        return batch
    overlap = min(words_cap - 1, round(words_cap * chunking.overlap_words / chunking.max_words))
    smaller = Chunking(words_cap, overlap)
    cut: list[Piece] = []
    for document, chunk in batch:
        if len(WORD.findall(chunk)) > words_cap:
            cut.extend((document, piece) for piece in chunk_text(chunk, smaller))
        else:
            cut.append((document, chunk))
    return cut


def _refused(exc: APIError, model: str) -> APIError:
    """The embedding model's 400 about its input, as one about the documents; anything else as it came."""
    if exc.status != 400 or exc.param != "input":
        return exc
    return bad_request(f"The embedding model `{model}` refused a chunk of the documents: {exc.message}",
                       param="documents", code=exc.code)
