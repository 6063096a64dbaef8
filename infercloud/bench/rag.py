"""W9 (a RAG pipeline under an end-to-end SLO) and W10 (repeated questions through the response caches).

W9: one single-box server (SmolLM2 + MiniLM) holds a collection of the RAG corpus (workloads/rag.py). Questions
arrive open loop (Poisson) at each rate, half of them "tight" (an end-to-end SLO of --tight-slo-s) and half
"loose" (--loose-slo-s), each question drawn from the corpus's. Three ways to serve them, one after the other on
the same server, each seeing the same arrivals:
  pipeline        the pipeline `rag-tight` / `rag-loose` as the chat model (embed -> retrieve -> generate in
                  the server, the generate stage entering the engine with its first-token deadline)
  pipeline-fifo   the same pipelines with deadline_ordering off (the engine serves them by arrival)
  client          the same stages called one by one by the client: /v1/embeddings, the collection's search by
                  that vector, /v1/chat/completions with the passages in the same template
A request is good when it answers within its class's SLO; goodput is good answers per second of the run.
Reported per mode and rate: goodput, attainment per class, p50/p90 end-to-end latency, failures (a pipeline
out of time answers 504 at once, so it frees the engine for requests that can still make it).

W10: a gateway (no tenancy: one open namespace) with the exact and semantic caches on serves a Zipf stream
of 200 questions, each draw in its original wording or a paraphrase (workloads/rag.py), closed loop.
Reported: hit, semantic-hit and miss counts and rates, p50/p90 latency of each (hits against misses).

    python -m infercloud.bench.rag w9 --rates 0.4,1.2 --duration-s 60 --out bench-results/w9
    python -m infercloud.bench.rag w10 --num-requests 400 --concurrency 4 --out bench-results/w10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import yaml

from infercloud.bench.arrivals import ClosedLoop, GammaArrivals
from infercloud.bench.compare import free_port
from infercloud.bench.peers.base import Peer
from infercloud.bench.workloads.rag import rag_corpus, rag_questions, zipf_question_stream
from infercloud.pipelines.spec import DEFAULT_TEMPLATE

SMOL, MINILM = "smollm2-135m-instruct", "all-minilm-l6-v2"
COLLECTION = "atlas"
MODES = ("pipeline", "pipeline-fifo", "client")


class ConfiguredServer(Peer):
    """`infercloud serve --config FILE` as a bench server (started, waited for, stopped like a peer)."""

    name = "rag-bench"

    def __init__(self, config: dict, home: Path | None = None):
        super().__init__(home)
        self.config = config

    @property
    def served_model(self) -> str:
        return SMOL

    def command(self, port: int) -> list[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"config-{port}.yaml"
        path.write_text(yaml.safe_dump({**self.config, "port": port}))
        return [sys.executable, "-m", "infercloud", "serve", "--config", str(path)]


@dataclass
class Outcome:
    cls: str                 # tight | loose (W9); hit | semantic-hit | miss (W10)
    e2e_s: float
    ok: bool
    status: int
    sources_ok: bool | None = None


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# -- W9 ----------------------------------------------------------------------------------------------------------
def w9_config(args) -> dict:
    stages = [{"kind": "embed"}, {"kind": "retrieve", "collection": COLLECTION, "top_k": args.top_k},
              {"kind": "generate", "max_tokens": args.max_tokens, "temperature": 0}]
    pipelines = [{"name": f"rag-{cls}{suffix}", "slo_s": slo, "deadline_ordering": ordering, "stages": stages}
                 for cls, slo in (("tight", args.tight_slo_s), ("loose", args.loose_slo_s))
                 for suffix, ordering in (("", True), ("-fifo", False))]
    engine = {"kv_cache_memory_gb": 0.5, **({"quantization": args.quantization} if args.quantization else {})}
    return {"models": [{"name": SMOL, "engine": engine}, {"name": MINILM, "kind": "embedding"}],
            "pipelines": pipelines, "max_waiting": 1024}


async def ingest(client: httpx.AsyncClient, corpus) -> None:
    created = await client.post("/v1/collections", json={"name": COLLECTION})
    if created.status_code not in (200, 409):
        raise RuntimeError(f"creating the collection failed: {created.text}")
    for start in range(0, len(corpus), 100):
        docs = [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in corpus[start:start + 100]]
        answer = await client.post("/v1/collections/atlas/documents", json={"documents": docs})
        answer.raise_for_status()


async def ask_pipeline(client: httpx.AsyncClient, name: str, question) -> tuple[int, bool | None]:
    answer = await client.post("/v1/chat/completions", json={
        "model": name, "messages": [{"role": "user", "content": question.text}]})
    if answer.status_code != 200:
        return answer.status_code, None
    sources = [s["document_id"] for s in answer.json()["infercloud"]["sources"]]
    return 200, question.document_id in sources


async def ask_client_side(client: httpx.AsyncClient, args, question, slo_s: float) -> tuple[int, bool | None]:
    """The stages as a client calls them: embed, search by the vector, generate with the passages."""
    embedded = await client.post("/v1/embeddings", json={"model": MINILM, "input": [question.text]})
    if embedded.status_code != 200:
        return embedded.status_code, None
    vector = embedded.json()["data"][0]["embedding"]
    found = await client.post(f"/v1/collections/{COLLECTION}/search",
                              json={"vector": vector, "top_k": args.top_k, "unique_documents": True})
    if found.status_code != 200:
        return found.status_code, None
    hits = found.json()["data"]
    passages = "\n\n".join(f"[{i + 1}] {h['text']}" for i, h in enumerate(hits))
    answer = await client.post("/v1/chat/completions", json={
        "model": SMOL, "max_tokens": args.max_tokens, "temperature": 0,
        "messages": [{"role": "system", "content": DEFAULT_TEMPLATE.replace("{passages}", passages)},
                     {"role": "user", "content": question.text}]})
    return answer.status_code, question.document_id in [h["document_id"] for h in hits]


async def w9_run(base_url: str, args, mode: str, rate: float, questions, seed: int) -> dict:
    rng = random.Random(seed)
    num = max(1, int(rate * args.duration_s))
    plan = [(rng.choice(("tight", "loose")), rng.choice(questions)) for _ in range(num)]
    slos = {"tight": args.tight_slo_s, "loose": args.loose_slo_s}
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        async def send(item) -> None:
            cls, question = item
            start = time.perf_counter()
            if mode == "client":
                status, sources_ok = await ask_client_side(client, args, question, slos[cls])
            else:
                status, sources_ok = await ask_pipeline(client, f"rag-{cls}{'-fifo' if mode.endswith('fifo') else ''}",
                                                        question)
            e2e = time.perf_counter() - start
            outcomes.append(Outcome(cls, e2e, status == 200 and e2e <= slos[cls], status, sources_ok))

        started = time.perf_counter()
        await GammaArrivals(rate, 1.0, np.random.default_rng(seed)).drive(plan, send)
        wall = time.perf_counter() - started
    return summarize_w9(mode, rate, outcomes, wall, args.duration_s)


def summarize_w9(mode: str, rate: float, outcomes: list[Outcome], wall_s: float, duration_s: float) -> dict:
    e2e = [o.e2e_s for o in outcomes]
    by_cls = {cls: [o for o in outcomes if o.cls == cls] for cls in ("tight", "loose")}
    answered = [o for o in outcomes if o.sources_ok is not None]
    return {"mode": mode, "rate": rate, "requests": len(outcomes), "wall_s": round(wall_s, 2),
            "goodput_rps": round(sum(o.ok for o in outcomes) / duration_s, 4),
            "good": sum(o.ok for o in outcomes), "failed": sum(o.status != 200 for o in outcomes),
            "attainment": {cls: round(sum(o.ok for o in v) / len(v), 3) if v else None for cls, v in by_cls.items()},
            "e2e_p50_s": percentile(e2e, 50), "e2e_p90_s": percentile(e2e, 90),
            "source_found": round(sum(o.sources_ok for o in answered) / len(answered), 3) if answered else None}


async def w9_one(base_url: str, args, mode: str, rate: float) -> dict:
    """One mode at one rate on a fresh server: no run finds the KV blocks of another's prompts cached."""
    corpus = rag_corpus(args.num_documents, seed=args.seed)
    questions = rag_questions(corpus, min(200, len(corpus)), seed=args.seed)
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await ingest(client, corpus)
    await w9_run(base_url, args, mode, rate, questions[-8:], seed=999)   # warm-up: a few, at the rate
    return await w9_run(base_url, args, mode, rate, questions, seed=args.seed + int(rate * 1000))


def w9(args) -> list[dict]:
    rows = []
    for rate in args.rates:
        for mode in args.modes:
            server = ConfiguredServer(w9_config(args))
            server.start(free_port(), timeout_s=600)
            try:
                row = asyncio.run(w9_one(f"http://127.0.0.1:{server.port}", args, mode, rate))
            finally:
                server.stop()
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# -- W10 ---------------------------------------------------------------------------------------------------------
def w10_config(args) -> dict:
    return {"cluster": {"threads_per_worker": 1},
            "models": [{"name": SMOL, "engine": {"kv_cache_memory_gb": 0.25}}, {"name": MINILM, "kind": "embedding"}],
            "cache": {"exact": {"enabled": True}, "semantic": {"models": [{"name": SMOL}],
                                                             "threshold": args.threshold}}}


async def w10(base_url: str, args) -> dict:
    corpus = rag_corpus(args.num_documents, seed=args.seed)
    questions = rag_questions(corpus, 200, seed=args.seed)
    stream = zipf_question_stream(questions, args.num_requests, s=args.zipf_s, seed=args.seed)
    outcomes: list[Outcome] = []
    answers: dict[int, set[str]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        async def send(item) -> None:
            index, text = item
            start = time.perf_counter()
            answer = await client.post("/v1/chat/completions", json={
                "model": SMOL, "max_tokens": args.max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": text}]})
            e2e = time.perf_counter() - start
            kind = answer.headers.get("x-infercloud-cache", "none")
            outcomes.append(Outcome(kind, e2e, answer.status_code == 200, answer.status_code))
            if answer.status_code == 200:
                answers.setdefault(index, set()).add(answer.json()["choices"][0]["message"]["content"])

        await ClosedLoop(args.concurrency).drive(stream, send)
    return summarize_w10(outcomes, answers)


def summarize_w10(outcomes: list[Outcome], answers: dict[int, set[str]]) -> dict:
    kinds = {k: [o.e2e_s for o in outcomes if o.cls == k] for k in ("hit", "semantic-hit", "miss")}
    hits = kinds["hit"] + kinds["semantic-hit"]
    row = {"requests": len(outcomes), "failed": sum(not o.ok for o in outcomes),
           "distinct_answers_per_question": round(float(np.mean([len(v) for v in answers.values()])), 3)
           if answers else None}
    for kind, values in kinds.items():
        row[kind] = {"count": len(values), "rate": round(len(values) / len(outcomes), 4) if outcomes else None,
                     "p50_ms": _ms(percentile(values, 50)), "p90_ms": _ms(percentile(values, 90))}
    hit_p50, miss_p50 = percentile(hits, 50), percentile(kinds["miss"], 50)
    row["miss_over_hit_p50"] = round(miss_p50 / hit_p50, 1) if hit_p50 and miss_p50 else None
    return row


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# -- the command -----------------------------------------------------------------------------------------------
def markdown_w9(rows: list[dict], args) -> str:
    lines = [f"W9: {args.num_documents} documents, top_k {args.top_k}, max_tokens {args.max_tokens}, SLO tight "
             f"{args.tight_slo_s} s / loose {args.loose_slo_s} s, {args.duration_s} s per run",
             "", "| rate (req/s) | mode | goodput (req/s) | tight met | loose met | p50 e2e (s) | p90 e2e (s) | "
             "failed | source found |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rate']} | {r['mode']} | {r['goodput_rps']} | {r['attainment']['tight']} | "
                     f"{r['attainment']['loose']} | {_fmt(r['e2e_p50_s'])} | {_fmt(r['e2e_p90_s'])} | "
                     f"{r['failed']}/{r['requests']} | {r['source_found']} |")
    return "\n".join(lines) + "\n"


def markdown_w10(row: dict, args) -> str:
    lines = [f"W10: {args.num_requests} requests, Zipf s={args.zipf_s} over 200 questions (original or paraphrase), "
             f"concurrency {args.concurrency}, semantic threshold {args.threshold}", "",
             "| answer | count | rate | p50 (ms) | p90 (ms) |", "|---|---|---|---|---|"]
    for kind in ("hit", "semantic-hit", "miss"):
        k = row[kind]
        lines.append(f"| {kind} | {k['count']} | {k['rate']} | {k['p50_ms']} | {k['p90_ms']} |")
    lines.append(f"\nmiss p50 / hit p50: {row['miss_over_hit_p50']}x; failed: {row['failed']}")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.rag", description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=("w9", "w10"))
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[0.4, 1.2],
                        help="W9: arrival rates, requests per second")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help="W9: modes to run")
    parser.add_argument("--duration-s", type=float, default=60.0, help="W9: seconds of arrivals per run")
    parser.add_argument("--tight-slo-s", type=float, default=6.0, help="W9: the tight class's end-to-end SLO")
    parser.add_argument("--loose-slo-s", type=float, default=20.0, help="W9: the loose class's end-to-end SLO")
    parser.add_argument("--top-k", type=int, default=3, help="W9: passages retrieved")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per answer")
    parser.add_argument("--quantization", choices=("int8",), default=None, help="the chat model's weights")
    parser.add_argument("--num-documents", type=int, default=240, help="documents in the collection")
    parser.add_argument("--num-requests", type=int, default=400, help="W10: requests")
    parser.add_argument("--concurrency", type=int, default=4, help="W10: closed-loop concurrency")
    parser.add_argument("--zipf-s", type=float, default=1.1, help="W10: Zipf exponent")
    parser.add_argument("--threshold", type=float, default=0.9, help="W10: the semantic cache's threshold")
    parser.add_argument("--seed", type=int, default=0, help="corpus, questions and arrivals")
    parser.add_argument("--out", type=Path, default=Path("bench-results/rag"), help="folder for JSON and markdown")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.workload == "w9":
        rows = w9(args)
        table = markdown_w9(rows, args)
    else:
        server = ConfiguredServer(w10_config(args))
        server.start(free_port(), timeout_s=600)
        try:
            rows = asyncio.run(w10(f"http://127.0.0.1:{server.port}", args))
        finally:
            server.stop()
        table = markdown_w10(rows, args)
    (args.out / f"{args.workload}.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                                "results": rows}, indent=2))
    (args.out / f"{args.workload}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
