"""The real all-MiniLM-L6-v2 embedding engine, shared by the embedding tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from infercloud.engine.embedding_engine import EmbeddingEngine
from infercloud.models.pull import pull

MINILM = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return pull(MINILM, progress=False)


@pytest.fixture(scope="module")
def engine(minilm_dir) -> EmbeddingEngine:
    return EmbeddingEngine(minilm_dir, device="cpu")
