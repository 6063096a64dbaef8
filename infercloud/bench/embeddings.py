"""Embedding throughput benchmark: one text per forward pass vs concurrent callers through the EmbeddingBatcher.

    python -m infercloud.bench.embeddings --concurrency 32 --requests 256

Both modes embed the same sentences in the same process on the same engine. "sequential" calls
`engine.embed([s])` once per sentence; "batched" runs `--concurrency` closed-loop callers, each sending
one sentence at a time to a shared EmbeddingBatcher until all requests are done. Prints a markdown
table, the speedup (target: at least 3x) and the largest difference between the two modes' vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from infercloud.engine.embedding_batcher import EmbeddingBatcher
from infercloud.engine.embedding_engine import EmbeddingEngine
from infercloud.models.catalog import resolve_model

WORDS = ("the model serves many users at once while batching keeps every core busy and each request "
         "pays only for its own tokens so latency stays low under load across regions and tenants with "
         "paged caches prefix reuse quotas budgets routers gateways replicas embeddings vectors search").split()
TARGET_SPEEDUP = 3.0


@dataclass(frozen=True)
class ModeResult:
    mode: str
    requests: int
    concurrency: int
    seconds: float
    sentences_per_s: float
    mean_latency_ms: float
    batches: int
    mean_batch_size: float


def make_sentences(n: int, seed: int) -> list[str]:
    """n sentences of 4 to 40 words, deterministic for a seed."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(4, 40))).capitalize() + "." for _ in range(n)]


def run_sequential(engine: EmbeddingEngine, sentences: list[str],
                   clock: Callable[[], float]) -> tuple[ModeResult, torch.Tensor]:
    latencies, vectors = [], []
    start = clock()
    for sentence in sentences:
        t0 = clock()
        vectors.append(engine.embed([sentence])[0])
        latencies.append(clock() - t0)
    elapsed = clock() - start
    n = len(sentences)
    result = ModeResult("sequential", n, 1, elapsed, n / elapsed, 1000 * statistics.fmean(latencies), n, 1.0)
    return result, torch.cat(vectors)


async def run_batched(engine: EmbeddingEngine, sentences: list[str], concurrency: int, max_batch_size: int,
                      max_wait_ms: float, clock: Callable[[], float]) -> tuple[ModeResult, torch.Tensor]:
    batcher = EmbeddingBatcher(engine, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    next_index = itertools.count()
    vectors: list[torch.Tensor | None] = [None] * len(sentences)
    latencies: list[float] = []

    async def caller() -> None:
        while (i := next(next_index)) < len(sentences):
            t0 = clock()
            vectors[i] = (await batcher.embed([sentences[i]]))[0]
            latencies.append(clock() - t0)

    start = clock()
    try:
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    finally:
        await batcher.stop()
    elapsed = clock() - start
    stats, n = batcher.stats(), len(sentences)
    result = ModeResult("batched", n, concurrency, elapsed, n / elapsed, 1000 * statistics.fmean(latencies),
                        stats.batches_run, stats.mean_batch_size or 0.0)
    return result, torch.cat(vectors)


def markdown_table(results: list[ModeResult]) -> str:
    lines = ["| mode | requests | concurrency | seconds | sentences/s | mean latency ms | batches | mean batch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.mode} | {r.requests} | {r.concurrency} | {r.seconds:.2f} | {r.sentences_per_s:.1f} | "
                     f"{r.mean_latency_ms:.1f} | {r.batches} | {r.mean_batch_size:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-minilm-l6-v2", help="catalog name or model folder")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="weights and activations of the encoder (pooling stays fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    engine = EmbeddingEngine(resolve_model(args.model), device=args.device, max_batch_size=args.max_batch_size,
                             dtype=args.dtype)
    sentences = make_sentences(args.requests, args.seed)
    engine.embed(sentences[:args.max_batch_size])  # warm up both shapes of work
    engine.embed(sentences[:1])
    clock = time.perf_counter
    sequential, seq_vectors = run_sequential(engine, sentences, clock)
    batched, batch_vectors = asyncio.run(run_batched(engine, sentences, args.concurrency, args.max_batch_size,
                                                     args.max_wait_ms, clock))
    speedup = batched.sentences_per_s / sequential.sentences_per_s
    max_diff = (seq_vectors - batch_vectors).abs().max().item()
    print(f"model {args.model} on {engine.device}, torch threads {torch.get_num_threads()}\n")
    print(markdown_table([sequential, batched]))
    print(f"\nspeedup (batched / sequential): {speedup:.2f}x (target >= {TARGET_SPEEDUP:.0f}x); "
          f"max |vector difference| {max_diff:.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"results": [asdict(r) for r in (sequential, batched)], "speedup": speedup,
                       "max_abs_diff": max_diff, "device": str(engine.device),
                       "torch_threads": torch.get_num_threads()}, f, indent=2)


if __name__ == "__main__":
    main()
