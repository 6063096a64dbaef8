"""Embeddings on the real all-MiniLM-L6-v2: parity with HF transformers, similarity, truncation, the batcher."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from safetensors.torch import load_file, save_file

from infercloud.engine.embedding_batcher import BatcherStoppedError, EmbeddingBatcher
from infercloud.engine.embedding_engine import EmbeddingEngine, InputTooLongError

SENTENCES = [
    "",
    "Hi",
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Paged attention stores keys and values in fixed-size blocks, so memory is allocated on demand, "
    "shared prefixes are reused across requests, and fragmentation stays low even with many users.",
    "Embeddings!",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Numbers like 3.14159 and 2.71828 appear in maths; emojis like 🙂 too.",
]


def hf_reference(model_dir: Path, texts: list[str], max_length: int) -> tuple[torch.Tensor, list[int]]:
    """sentence-transformers' recipe with plain transformers: masked mean pooling, then L2 normalize."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1), batch["attention_mask"].sum(1).tolist()


def many_texts(n: int) -> list[str]:
    return [f"{SENTENCES[i % len(SENTENCES)]} (variant {i})" * (1 + i % 3) for i in range(n)]


def test_reads_sentence_transformers_config(engine):
    assert (engine.dim, engine.max_seq_length) == (384, 256)
    assert engine.config.pooling == "mean" and engine.config.normalize


def test_parity_with_transformers_mean_pooling(engine, minilm_dir):
    expected, expected_counts = hf_reference(minilm_dir, SENTENCES, engine.max_seq_length)
    vectors, counts = engine.embed(SENTENCES)
    assert vectors.dtype == torch.float32 and vectors.shape == (len(SENTENCES), 384)
    assert counts == expected_counts and counts[0] == 2  # the empty string is [CLS][SEP]
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)
    alone = torch.cat([engine.embed([s])[0] for s in SENTENCES])  # no padding at all
    torch.testing.assert_close(alone, vectors, atol=1e-5, rtol=0)


def test_related_pair_is_closer_than_unrelated(engine):
    guitar, instrument, stocks = engine.embed(
        ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."])[0]
    assert torch.dot(guitar, instrument) > torch.dot(guitar, stocks)
    assert torch.dot(guitar, instrument) > 0.3


def test_long_input_is_refused_or_truncated_as_asked(engine, minilm_dir):
    long_text = "tokens are cheap but context windows are not " * 200
    with pytest.raises(InputTooLongError) as refused:
        engine.embed(["short", long_text])
    assert (refused.value.index, refused.value.num_tokens, refused.value.limit) == (1, 1802, 256)
    vectors, counts = engine.embed([long_text, "short"], truncate_to=engine.max_seq_length)
    assert counts[0] == engine.max_seq_length == 256
    assert engine.prepare([long_text], 256)[0][-1] == engine.tokenizer.token_to_id("[SEP]")
    assert torch.isfinite(vectors).all() and torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    expected, _ = hf_reference(minilm_dir, [long_text], engine.max_seq_length)
    torch.testing.assert_close(vectors[:1], expected, atol=1e-5, rtol=0)
    ids = engine.tokenize(["short"])[0]
    with pytest.raises(InputTooLongError):
        engine.embed_tokens([ids * 200])
    assert engine.prepare([ids * 200], 10) == [(ids * 200)[:10]]


def copy_with_weights(src: Path, dst: Path, weights: dict[str, torch.Tensor]) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    save_file(weights, dst / "model.safetensors")
    return dst


def test_loads_bert_prefixed_checkpoint_and_rejects_missing_weights(engine, minilm_dir, tmp_path):
    weights = load_file(minilm_dir / "model.safetensors")
    prefixed = {f"bert.{k}": v for k, v in weights.items()}
    prefixed["cls.predictions.bias"] = torch.zeros(engine.vocab_size)  # an MLM head: ignored
    other = EmbeddingEngine(copy_with_weights(minilm_dir, tmp_path / "prefixed", prefixed), device="cpu")
    torch.testing.assert_close(other.embed(SENTENCES)[0], engine.embed(SENTENCES)[0], atol=0, rtol=0)
    del weights["encoder.layer.3.attention.self.key.weight"]
    with pytest.raises(KeyError, match="missing"):
        EmbeddingEngine(copy_with_weights(minilm_dir, tmp_path / "broken", weights), device="cpu")


def test_embed_tokens_matches_text_and_rejects_bad_ids(engine):
    ids = engine.tokenize(SENTENCES[:3])
    torch.testing.assert_close(engine.embed_tokens(ids)[0], engine.embed(SENTENCES[:3])[0], atol=1e-6, rtol=0)
    for bad in ([[]], [[101, engine.vocab_size]], [[-1]]):
        with pytest.raises(ValueError):
            engine.embed_tokens(bad)


def test_batcher_concurrent_callers_match_one_at_a_time(engine):
    texts = many_texts(32)
    expected = [engine.embed([t]) for t in texts]

    async def main():
        batcher = EmbeddingBatcher(engine, max_batch_size=32, max_wait_ms=20.0)
        try:
            results = await asyncio.gather(*(batcher.embed([t]) for t in texts))
        finally:
            await batcher.stop()
        return results, batcher.stats()

    results, stats = asyncio.run(main())
    for (got, got_counts, device_s), (want, want_counts) in zip(results, expected):
        assert got_counts == want_counts
        assert device_s > 0
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert stats.texts_embedded == 32 and stats.batches_run < 32
    assert stats.mean_batch_size == 32 / stats.batches_run
    assert stats.tokens_embedded == sum(c for _, (c,) in expected)


def test_batcher_splits_a_request_larger_than_a_batch(engine):
    texts = many_texts(20)

    async def main():
        batcher = EmbeddingBatcher(engine, max_batch_size=8, max_wait_ms=1.0)
        try:
            return await batcher.embed(texts), await batcher.embed_tokens(engine.tokenize(texts[:2])), batcher.stats()
        finally:
            await batcher.stop()

    (vectors, counts, _), (token_vectors, _, _), stats = asyncio.run(main())
    want, want_counts = engine.embed(texts)
    assert counts == want_counts
    torch.testing.assert_close(vectors, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(token_vectors, want[:2], atol=1e-5, rtol=0)
    assert (stats.batches_run, stats.texts_embedded) == (4, 22)  # 8 + 8 + 4, then the 2 token inputs


def test_cancelled_caller_is_skipped_and_others_served(engine):
    texts = many_texts(5)

    async def main():
        # The batch runs only once 4 live inputs are queued (the wait is far longer than the test).
        batcher = EmbeddingBatcher(engine, max_batch_size=4, max_wait_ms=600_000)
        try:
            first = [asyncio.create_task(batcher.embed([t])) for t in texts[:3]]
            await asyncio.sleep(0)
            first[1].cancel()
            await asyncio.sleep(0)
            later = [asyncio.create_task(batcher.embed([t])) for t in texts[3:]]
            served = await asyncio.gather(first[0], first[2], *later)
            with pytest.raises(asyncio.CancelledError):
                await first[1]
            return served, batcher.stats()
        finally:
            await batcher.stop()

    served, stats = asyncio.run(main())
    for (got, _, _), text in zip(served, [texts[0], texts[2], texts[3], texts[4]]):
        torch.testing.assert_close(got, engine.embed([text])[0], atol=1e-5, rtol=0)
    assert (stats.batches_run, stats.texts_embedded) == (1, 4)


def test_stop_fails_waiting_callers(engine):
    async def main():
        batcher = EmbeddingBatcher(engine, max_batch_size=4, max_wait_ms=600_000)
        waiting = asyncio.create_task(batcher.embed(["never batched"]))
        await asyncio.sleep(0)
        await batcher.stop()
        with pytest.raises(BatcherStoppedError):
            await waiting
        vectors, counts, _ = await batcher.embed([])
        assert vectors.shape == (0, 384) and counts == []

    asyncio.run(main())


def test_bfloat16_stays_close_to_float32(engine, minilm_dir):
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    reference, counts = engine.embed(texts)
    bf16 = EmbeddingEngine(minilm_dir, device="cpu", dtype="bfloat16")
    vectors, bf16_counts = bf16.embed(texts)
    assert vectors.dtype == torch.float32 and bf16_counts == counts
    assert (vectors != reference).any()  # really computed in bfloat16
    assert torch.nn.functional.cosine_similarity(vectors, reference).min() > 0.999
    with pytest.raises(ValueError):
        EmbeddingEngine(minilm_dir, device="cpu", dtype="int8")
