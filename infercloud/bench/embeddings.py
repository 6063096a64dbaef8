"""Embedding benchmarks: batching throughput (in process), and fairness (against a worker process it starts).

    python -m infercloud.bench.embeddings --concurrency 32 --requests 256
    python -m infercloud.bench.embeddings --fairness --repetitions 5 --out fairness.json

Throughput: both modes embed the same sentences in the same process on the same engine. "sequential"
calls `engine.embed([s])` once per sentence; "batched" runs `--concurrency` closed-loop callers, each
sending one sentence at a time to a shared EmbeddingBatcher until all requests are done. Prints a
markdown table, the speedup (target: at least 3x) and the largest difference between the two modes' vectors.

Fairness (`--fairness`): starts `infercloud serve` with the embedding model alone (its per-request token
cap raised so the big request is legal) and, each repetition, in one run: the latency of a 1-input
request on the idle worker ("alone"); the device time of one full batch of big inputs ("batch", the
usage's device_seconds of a request of max_batch_size of them); a `--big-inputs` request of about
`--big-tokens` tokens each with the same 1-input request sent `--delay-s` after it ("behind"; the big
request's client leaves once that is answered); and the big request alone, its client leaving
`--leave-after-s` after sending it: the batches it ran (the worker's batch count once nothing is in
flight, less one probe request's batch) and its inputs computed, against the whole job's
ceil(big_inputs / max_batch_size). With `--full-job` (the default) the big request is also run once to
its end, timed. Medians over the repetitions; the goal is behind p50 <= 2 x alone p50 + batch p50.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import torch
import yaml
from tokenizers import Tokenizer

from infercloud.bench.http_client import internal_state
from infercloud.cluster.local import free_port, stop_process
from infercloud.engine.embedding_batcher import EmbeddingBatcher
from infercloud.engine.embedding_engine import EmbeddingEngine
from infercloud.models.catalog import resolve_model
from infercloud.models.local import LocalModel

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


# -- fairness: a small request behind a big one, on a worker process ------------------------------------------
SMALL_TEXT = "A man is playing a guitar."


@dataclass(frozen=True)
class FairnessResult:
    device: str
    max_batch_size: int
    big_inputs: int
    big_tokens_mean: float           # tokens per big input, [CLS]/[SEP] included
    repetitions: int
    delay_s: float
    leave_after_s: float
    alone_ms: list[float]            # the 1-input request on the idle worker
    behind_ms: list[float]           # the same, sent delay_s after the big request
    batch_ms: list[float]            # device time of one full batch of big inputs
    left_batches: list[int]          # batches the big request ran when its client left
    left_inputs: list[int]           # its inputs computed by then (the rest were dropped, never computed)
    full_job_batches: int            # ceil(big_inputs / max_batch_size)
    full_job_s: float | None         # the big request run to its end (--full-job)
    full_job_batches_run: int | None

    @property
    def alone_p50_ms(self) -> float:
        return statistics.median(self.alone_ms)

    @property
    def behind_p50_ms(self) -> float:
        return statistics.median(self.behind_ms)

    @property
    def batch_p50_ms(self) -> float:
        return statistics.median(self.batch_ms)

    @property
    def goal_ms(self) -> float:
        return 2 * self.alone_p50_ms + self.batch_p50_ms

    def to_json(self) -> dict:
        return {**asdict(self), "alone_p50_ms": self.alone_p50_ms, "behind_p50_ms": self.behind_p50_ms,
                "batch_p50_ms": self.batch_p50_ms, "goal_ms": self.goal_ms,
                "meets_goal": self.behind_p50_ms <= self.goal_ms}


def make_long_texts(n: int, num_tokens: int, tokenizer: Tokenizer, seed: int) -> list[str]:
    """n texts of whole words, each at most num_tokens tokens with [CLS]/[SEP] (within a word of it)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        text = " ".join(rng.choices(WORDS, k=num_tokens))
        encoding = tokenizer.encode(text, add_special_tokens=False)
        cut = num_tokens - 2
        if len(encoding.ids) > cut:   # end at the last whole word that fits
            word = encoding.word_ids[cut]
            first_of_word = encoding.word_ids.index(word)
            text = text[:encoding.offsets[first_of_word][0]].rstrip()
        texts.append(text)
    return texts


class WorkerProcess:
    """`infercloud serve` with one embedding model, on a free loopback port; stopped by SIGTERM."""

    def __init__(self, model: dict, workdir: Path, startup_timeout_s: float = 300.0):
        port = free_port()
        config = {"port": port, "models": [model], "max_body_bytes": 64 * 2**20}
        (workdir / "serve.yaml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "serve.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "infercloud", "serve", "--config",
                                          str(workdir / "serve.yaml")], stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        self.model = model["name"]
        deadline = time.monotonic() + startup_timeout_s
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker did not start:\n{self.log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.3)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def model_state(self) -> dict:
        return internal_state(self.url)["models"][self.model]

    def stop(self) -> int:
        return stop_process(self.proc, 60)


async def _post(client: httpx.AsyncClient, url: str, body: bytes) -> httpx.Response:
    response = await client.post(f"{url}/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        raise RuntimeError(f"embeddings request failed: {response.status_code} {response.text[:500]}")
    return response


async def _timed(client: httpx.AsyncClient, url: str, body: bytes, clock: Callable[[], float]) -> float:
    start = clock()
    await _post(client, url, body)
    return clock() - start


async def _behind_once(url: str, big: bytes, small: bytes, delay_s: float, clock: Callable[[], float]) -> float:
    """The latency of `small` sent delay_s after `big`, in seconds; big's client leaves once small is answered."""
    timeout = httpx.Timeout(3600, connect=10)
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as big_client, \
            httpx.AsyncClient(timeout=timeout, trust_env=False) as small_client:
        big_task = asyncio.create_task(_post(big_client, url, big))
        await asyncio.sleep(delay_s)
        behind_s = await _timed(small_client, url, small, clock)
        big_task.cancel()   # the client leaves: its connection is closed
        await asyncio.gather(big_task, return_exceptions=True)
    return behind_s


async def _leave_once(url: str, big: bytes, leave_after_s: float) -> None:
    """Send `big` and leave (close the connection) leave_after_s later."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600, connect=10), trust_env=False) as client:
        big_task = asyncio.create_task(_post(client, url, big))
        await asyncio.sleep(leave_after_s)
        big_task.cancel()
        await asyncio.gather(big_task, return_exceptions=True)


def _after_leaving(worker: WorkerProcess, small: bytes, before: dict, big_inputs: int) -> tuple[int, int]:
    """Once nothing is in flight: the batches run since `before` (less one probe request's batch; the probe
    runs after whatever batch was being computed, so the count is final), and the big request's inputs
    that were computed (those not dropped)."""
    while worker.model_state()["in_flight"]:
        time.sleep(0.05)
    httpx.post(f"{worker.url}/v1/embeddings", content=small, headers={"Content-Type": "application/json"},
               timeout=600, trust_env=False).raise_for_status()
    after = worker.model_state()
    return after["batches"] - before["batches"] - 1, big_inputs - (after["inputs_dropped"] - before["inputs_dropped"])


def run_fairness(args: argparse.Namespace, clock: Callable[[], float] = time.perf_counter) -> FairnessResult:
    model_dir = resolve_model(args.model)
    tokenizer = Tokenizer.from_file(str(LocalModel.open(model_dir).tokenizer_file))
    tokenizer.no_padding()      # the file may pad and truncate (MiniLM's: to 128); count whole inputs
    tokenizer.no_truncation()
    texts = make_long_texts(args.big_inputs, args.big_tokens, tokenizer, args.seed)
    big_tokens = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    name = Path(args.model).name if Path(args.model).is_dir() else args.model
    body = {"model": name}
    big, small, batch = (json.dumps({**body, "input": x}).encode()
                         for x in (texts, [SMALL_TEXT], texts[:args.max_batch_size]))
    model = {"name": name, "path": str(model_dir), "kind": "embedding", "max_batch_size": args.max_batch_size,
             "max_wait_ms": args.max_wait_ms, "max_request_tokens": max(300_000, 2 * sum(big_tokens)),
             "engine": {"device": args.device, "dtype": args.dtype}}
    with tempfile.TemporaryDirectory(prefix="bench-embeddings-") as tmp:
        worker = WorkerProcess(model, Path(tmp))
        try:
            return asyncio.run(_fairness_runs(args, worker, big, small, batch, big_tokens, clock))
        finally:
            worker.stop()


async def _fairness_runs(args: argparse.Namespace, worker: WorkerProcess, big: bytes, small: bytes, batch: bytes,
                         big_tokens: list[int], clock: Callable[[], float]) -> FairnessResult:
    alone, behind, batch_ms, left_batches, left_inputs = [], [], [], [], []
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600, connect=10), trust_env=False) as client:
        for _ in range(2):   # warm up: one batch of each shape
            await _post(client, worker.url, batch)
            await _post(client, worker.url, small)
        for rep in range(args.repetitions):
            alone.append(1000 * await _timed(client, worker.url, small, clock))
            usage = (await _post(client, worker.url, batch)).json()["usage"]
            batch_ms.append(1000 * usage["device_seconds"])
            before = worker.model_state()
            behind.append(1000 * await _behind_once(worker.url, big, small, args.delay_s, clock))
            await asyncio.to_thread(_after_leaving, worker, small, before, args.big_inputs)   # idle again
            before = worker.model_state()
            await _leave_once(worker.url, big, args.leave_after_s)
            batches, computed = await asyncio.to_thread(_after_leaving, worker, small, before, args.big_inputs)
            left_batches.append(batches)
            left_inputs.append(computed)
            print(f"rep {rep + 1}/{args.repetitions}: alone {alone[-1]:.1f} ms, behind {behind[-1]:.1f} ms, "
                  f"batch {batch_ms[-1]:.1f} ms; a big request whose client left after {args.leave_after_s:g} s "
                  f"ran {batches} batches, {computed} of {args.big_inputs} inputs", flush=True)
        full_s = full_batches = None
        if args.full_job:
            before = worker.model_state()["batches"]
            full_s = await _timed(client, worker.url, big, clock)
            full_batches = worker.model_state()["batches"] - before
    device = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    return FairnessResult(device, args.max_batch_size, args.big_inputs, statistics.fmean(big_tokens),
                          args.repetitions, args.delay_s, args.leave_after_s, alone, behind, batch_ms, left_batches,
                          left_inputs, math.ceil(args.big_inputs / args.max_batch_size), full_s, full_batches)


def fairness_table(r: FairnessResult) -> str:
    full = "not run" if r.full_job_s is None else f"{r.full_job_s:.1f} s, {r.full_job_batches_run} batches"
    return "\n".join([
        "| measure | value |", "|---|---:|",
        f"| alone p50 (1 input, idle worker) | {r.alone_p50_ms:.1f} ms |",
        (f"| behind p50 (same, {r.delay_s:g} s after {r.big_inputs} inputs of ~{r.big_tokens_mean:.0f} tokens) "
         f"| {r.behind_p50_ms:.1f} ms |"),
        f"| one batch p50 ({r.max_batch_size} big inputs, device time) | {r.batch_p50_ms:.1f} ms |",
        f"| goal: 2 x alone + one batch | {r.goal_ms:.1f} ms |",
        (f"| big request's batches when its client left after {r.leave_after_s:g} s | "
         f"{', '.join(map(str, r.left_batches))} of {r.full_job_batches} |"),
        f"| its inputs computed by then | {', '.join(map(str, r.left_inputs))} of {r.big_inputs} |",
        f"| whole job | {full} |"])


def fairness_main(args: argparse.Namespace) -> None:
    result = run_fairness(args)
    print(f"\nmodel {args.model}, {result.repetitions} repetitions\n")
    print(fairness_table(result))
    verdict = "meets" if result.behind_p50_ms <= result.goal_ms else "misses"
    print(f"\nbehind p50 {result.behind_p50_ms:.1f} ms {verdict} the goal (<= {result.goal_ms:.1f} ms)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result.to_json(), f, indent=2)


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
    fairness = parser.add_argument_group("fairness (against a worker process)")
    fairness.add_argument("--fairness", action="store_true", help="measure fairness instead of throughput")
    fairness.add_argument("--repetitions", type=int, default=5)
    fairness.add_argument("--big-inputs", type=int, default=2048)
    fairness.add_argument("--big-tokens", type=int, default=200, help="tokens per big input, [CLS]/[SEP] included")
    fairness.add_argument("--delay-s", type=float, default=0.5, help="the small request's delay after the big one")
    fairness.add_argument("--leave-after-s", type=float, default=2.0, help="when the big request's client leaves")
    fairness.add_argument("--full-job", action=argparse.BooleanOptionalAction, default=True,
                          help="also run the big request once to its end")
    args = parser.parse_args(argv)
    if args.fairness:
        return fairness_main(args)
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
