"""The collections' vector index at scale: build time, search latency and recall@k of the default index
(collections/hnsw.py: usearch HNSW) against exact search (collections/index.py: numpy), same vectors, same
queries, one after the other in one process.

Vectors: `--num` clustered unit vectors of `--dim` values (`--clusters` Gaussian centers, noise `--noise`
around each; the queries are fresh draws from the same clusters, so each has near neighbours as a question
has in a real collection). With `--real N`, also N real all-MiniLM-L6-v2 embeddings of distinct lines of this
repository's sources and docs (queries: other lines). Each search is one query, as a request makes it;
latency is measured per call (p50, p90 in ms). Recall@k: the share of exact search's top k that the index
returns. HNSW is also searched at other expansion values (`--expansion`) and with a metadata filter that
selects `--filter-share` of the vectors (over-fetch and post-filter, exact over the selected when too few).

    python -m infercloud.bench.vector_index --num 100000 --dim 384 --real 10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from infercloud.collections.hnsw import EXACT_BELOW, EXPANSION_SEARCH, HnswIndex, build_inline
from infercloud.collections.index import ExactIndex


def clustered(num: int, dim: int, clusters: int, noise: float, seed: int, centers_seed: int = 0) -> np.ndarray:
    centers = np.random.default_rng(centers_seed).normal(size=(clusters, dim)) / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    vectors = centers[rng.integers(0, clusters, num)] + noise * rng.normal(size=(num, dim)) / np.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def repo_lines(limit: int) -> list[str]:
    """Distinct lines of six words or more from this repository's Python sources and docs, in a fixed order."""
    root = Path(__file__).resolve().parents[2]
    lines: dict[str, None] = {}
    for path in sorted([*root.glob("infercloud/**/*.py"), *root.glob("docs/*.md"), *root.glob("tests/**/*.py")]):
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if len(line.split()) >= 6:
                lines.setdefault(line[:500])
    ordered = list(lines)
    np.random.default_rng(0).shuffle(ordered)
    return ordered[:limit]


def minilm(texts: list[str]) -> np.ndarray:
    from infercloud.engine.embedding_engine import EmbeddingEngine
    from infercloud.models.catalog import resolve_model

    engine = EmbeddingEngine(resolve_model("all-minilm-l6-v2"), device="cpu", max_batch_size=64)
    vectors, _ = engine.embed(texts, truncate_to=engine.max_seq_length)
    vectors = vectors.numpy()
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def timed_searches(index, queries: np.ndarray, k: int, among: np.ndarray | None = None):
    found, times = [], []
    index.search(queries[0], k, among)   # warm
    for query in queries:
        start = time.perf_counter()
        keys, _ = index.search(query, k, among)
        times.append(time.perf_counter() - start)
        found.append(keys)
    ms = sorted(t * 1e3 for t in times)
    return found, {"p50_ms": round(statistics.median(ms), 4), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 4)}


def recall(found: list[np.ndarray], truth: list[np.ndarray], k: int) -> float:
    return round(float(np.mean([len(set(f.tolist()) & set(t.tolist())) / min(k, len(t)) for f, t in
                                zip(found, truth)])), 4)


def measure(name: str, vectors: np.ndarray, queries: np.ndarray, k: int, expansions: list[int],
            filter_share: float) -> list[dict]:
    keys = np.arange(1, len(vectors) + 1, dtype=np.int64)
    rows = []
    start = time.perf_counter()
    exact = ExactIndex(vectors.shape[1], capacity=len(vectors))
    exact.add(keys, vectors)
    exact_build = time.perf_counter() - start
    truth, stats = timed_searches(exact, queries, k)
    kth = float(np.mean([exact.search(q, k)[1][-1] for q in queries]))
    base = {"data": name, "num": len(vectors), "dim": vectors.shape[1], "k": k, "kth_neighbour_cosine": round(kth, 3)}
    rows.append({**base, "index": "exact (numpy)", "build_s": round(exact_build, 2), **stats, "recall": 1.0})

    start = time.perf_counter()
    hnsw = HnswIndex(vectors.shape[1], exact_below=min(EXACT_BELOW, len(vectors)), start_build=build_inline)
    hnsw.add(keys, vectors)
    build = time.perf_counter() - start
    assert hnsw.has_graph
    for expansion in expansions:
        hnsw.expansion_search = expansion
        found, stats = timed_searches(hnsw, queries, k)
        rows.append({**base, "index": f"usearch HNSW, ef={expansion}", "build_s": round(build, 2), **stats,
                     "recall": recall(found, truth, k)})
    hnsw.expansion_search = EXPANSION_SEARCH
    among = np.random.default_rng(1).choice(keys, int(len(keys) * filter_share), replace=False)
    filtered_truth, stats = timed_searches(exact, queries, k, among)
    rows.append({**base, "index": f"exact, filter keeps {filter_share:.0%}", "build_s": None, **stats, "recall": 1.0})
    found, stats = timed_searches(hnsw, queries, k, among)
    rows.append({**base, "index": f"usearch HNSW, filter keeps {filter_share:.0%}", "build_s": None, **stats,
                 "recall": recall(found, filtered_truth, k)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| data (k-th neighbour's cosine) | index | build s | search p50 ms | p90 ms | recall@k |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        build = "" if r["build_s"] is None else f"{r['build_s']:.2f}"
        lines.append(f"| {r['data']} {r['num']:,} x {r['dim']} ({r['kth_neighbour_cosine']:.2f}) | {r['index']} | "
                     f"{build} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['recall']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.8)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--expansion", default="64,128", help="HNSW expansion_search values to search at")
    parser.add_argument("--filter-share", type=float, default=0.1)
    parser.add_argument("--real", type=int, default=0, help="also N real MiniLM embeddings of repository lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    expansions = [int(x) for x in args.expansion.split(",")]
    vectors = clustered(args.num, args.dim, args.clusters, args.noise, seed=args.seed + 1)
    queries = clustered(args.queries, args.dim, args.clusters, args.noise, seed=args.seed + 2)
    rows = measure("clustered", vectors, queries, args.k, expansions, args.filter_share)
    if args.real:
        texts = repo_lines(args.real + args.queries)
        embedded = minilm(texts)
        rows += measure("MiniLM", embedded[args.queries:], embedded[:args.queries], args.k, expansions,
                        args.filter_share)
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
