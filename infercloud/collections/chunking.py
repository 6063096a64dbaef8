"""Chunking: a document's text cut into overlapping windows of words, each embedded and searched on its own.

A window holds at most `max_words` words and starts `max_words - overlap_words` words after the one before, so
a sentence cut by one window's end is whole in the next; the last window ends at the text's end (no window
lies wholly inside the one before). A chunk is the original text from its first word to its last, spacing
and line breaks kept. A word is a run of non-space characters.

An embedding model reads a bounded number of tokens (all-MiniLM-L6-v2: 256), and words are not tokens: 200
words of English prose are about 260 tokens, of technical text often 350 or more. `split_further` cuts a chunk
that the model refused as too long into pieces `factor` of its size (by words; a single over-long word by
characters), with the same overlap ratio, so every word is embedded rather than cut off (collections/ingest.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

WORD = re.compile(r"\S+")
MAX_WORDS_LIMIT = 4096


@dataclass(frozen=True)
class Chunking:
    max_words: int = 200
    overlap_words: int = 40

    def __post_init__(self) -> None:
        if not 1 <= self.max_words <= MAX_WORDS_LIMIT:
            raise ValueError(f"chunking.max_words must be from 1 to {MAX_WORDS_LIMIT}, got {self.max_words}")
        if not 0 <= self.overlap_words < self.max_words:
            raise ValueError(f"chunking.overlap_words must be from 0 to max_words - 1 ({self.max_words - 1}), "
                             f"got {self.overlap_words}")

    def to_json(self) -> dict:
        return asdict(self)


def chunk_text(text: str, chunking: Chunking) -> list[str]:
    """The chunks of `text`, in order; none for a text without a word."""
    spans = [m.span() for m in WORD.finditer(text)]
    step = chunking.max_words - chunking.overlap_words
    chunks = []
    for start in range(0, len(spans), step):
        end = min(start + chunking.max_words, len(spans))
        chunks.append(text[spans[start][0]:spans[end - 1][1]])
        if end == len(spans):
            break
    return chunks


def split_further(chunk: str, factor: float, chunking: Chunking) -> list[str]:
    """`chunk` in pieces of about `factor` (0 < factor < 1) of its words, overlapping in `chunking`'s ratio;
    a chunk of one word, in pieces of `factor` of its characters (no overlap). Always at least two pieces."""
    words = len(WORD.findall(chunk))
    if words >= 2:
        max_words = max(1, min(words - 1, math.floor(words * factor)))
        overlap = min(max_words - 1, round(max_words * chunking.overlap_words / chunking.max_words))
        return chunk_text(chunk, Chunking(max_words, overlap))
    size = max(1, min(len(chunk) - 1, math.floor(len(chunk) * factor)))
    return [chunk[i:i + size] for i in range(0, len(chunk), size)]
