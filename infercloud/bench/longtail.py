"""W8 long tail: many models with Zipf popularity, on a pool of shared workers against one dedicated worker each.

    python -m infercloud.bench.longtail --models 12 --duration 120 --rate 4 --out bench-results/longtail.json

`--models` random-weight Llama models (`infercloud models create-random`, a few sizes: 2-4 layers,
hidden 64-256) are made in an INFERCLOUD_HOME of their own (a temp dir, or --home to reuse one). Model
k (k = 1..N) gets a share of the requests proportional to k^-s (Zipf, s = --zipf-s): most requests go
to a few models, most models are rarely called. One seeded request list (random prompt ids, greedy,
`ignore_eos`, streamed /v1/completions) and one seeded Poisson schedule are sent to two clouds, one
after the other in the same run:
  - pooled: `--pool-workers` shared workers (1 torch thread each) whose memory budget holds only part of
    the models (`--pool-memory-fraction` of all their footprints, weights + KV), every model `pool:`-placed
    with autoscaling min 0, max 1: a request for a model that is not loaded is held at the gateway while
    the controller loads it on a worker, unloading the least recently used idle models if memory is short;
  - dedicated: one worker process per model (`replicas: 1`, no autoscaling, 1 torch thread each).
Before the measured window each cloud gets one request per model, least popular first and one at a time
(not measured), so that both start warm and the pooled workers hold the most popular models.

Device-seconds: every worker process of a cloud is a direct child of its gateway (`infercloud serve`);
a sampler reads the gateway's children every `--sample-s` seconds (psutil) and keeps each one's start
time and the last time it was seen alive. Device-seconds = sum over those processes of the seconds
they were alive within the measured window (first send -> last request done) x their torch threads (1
here): pool workers for pooled, model replicas for dedicated. The gateway process (one in either
setup) is not counted. Goodput counts requests meeting both SLOs (TTFT and TPOT, docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil

from infercloud.bench.arrivals import ArrivalProcess, ClosedLoop, GammaArrivals
from infercloud.bench.http_client import Target, completion_body, internal_state, make_client, stream_completion
from infercloud.bench.metrics import LoadResult, Slo, StreamRecord, parse_slo, summarize
from infercloud.bench.peers.cloud import CloudPeer
from infercloud.bench.report import run_and_report
from infercloud.bench.workloads import BenchRequest, random_token_ids
from infercloud.cluster.local import free_port

VOCAB_FROM = "smollm2-135m-instruct"
VOCAB = 49152
SIZES = ((2, 64), (3, 128), (4, 192), (2, 256), (3, 64), (4, 128), (2, 192), (3, 256))  # (layers, hidden)


# -- the models and the requests (pure) ---------------------------------------------------------------------
@dataclass(frozen=True)
class TailModel:
    name: str
    rank: int          # 1 = most popular
    layers: int
    hidden: int
    seed: int


def tail_models(num: int) -> list[TailModel]:
    """`num` models, rank 1 first, their sizes cycling through SIZES (so sizes mix across popularity)."""
    return [TailModel(f"lt-{k:02d}", k, *SIZES[(k - 1) % len(SIZES)], seed=k) for k in range(1, num + 1)]


def zipf_weights(num: int, s: float) -> np.ndarray:
    """P(rank k) proportional to k^-s, k = 1..num (a finite Zipf law); sums to 1."""
    if num < 1 or s < 0:
        raise ValueError("need at least one model and s >= 0")
    weights = np.arange(1, num + 1, dtype=float) ** -s
    return weights / weights.sum()


def sample_ranks(rng: np.random.Generator, num_models: int, s: float, num_requests: int) -> np.ndarray:
    """Ranks (1..num_models) of `num_requests` requests drawn with Zipf(s) popularity."""
    return rng.choice(np.arange(1, num_models + 1), size=num_requests, p=zipf_weights(num_models, s))


def make_requests(models: Sequence[TailModel], num_requests: int, s: float, input_len: int, output_len: int,
                  seed: int, vocab_size: int = VOCAB) -> list[BenchRequest]:
    """The measured requests: a Zipf-drawn model each, random prompt ids, fixed lengths (same seed, same list)."""
    rng = np.random.default_rng(seed)
    ranks = sample_ranks(rng, len(models), s, num_requests)
    by_rank = {m.rank: m for m in models}
    return [BenchRequest(f"w8-{i}", random_token_ids(rng, input_len, vocab_size), output_len,
                         model=by_rank[int(rank)].name) for i, rank in enumerate(ranks)]


def warmup_requests(models: Sequence[TailModel], input_len: int, seed: int,
                    vocab_size: int = VOCAB) -> list[BenchRequest]:
    """One short request per model, least popular first (the most popular end up loaded)."""
    rng = np.random.default_rng(seed + 10_000)
    return [BenchRequest(f"warm-{m.name}", random_token_ids(rng, input_len, vocab_size), 4, model=m.name)
            for m in sorted(models, key=lambda m: -m.rank)]


def device_seconds(lifetimes: dict[int, tuple[float, float]], threads: dict[int, int] | int,
                   start: float, end: float) -> float:
    """Sum over processes of (seconds alive within [start, end]) x threads.

    `lifetimes[pid]` = (started, last seen alive); a process still alive at the end has last >= end."""
    total = 0.0
    for pid, (born, last) in lifetimes.items():
        alive = max(0.0, min(end, last) - max(start, born))
        total += alive * (threads if isinstance(threads, int) else threads[pid])
    return total


def pool_memory_gb(footprints: dict[str, int], fraction: float, workers: int) -> float:
    """Per-worker budget: `fraction` of all models' footprints over the workers, at least the largest model
    (plus 5 %, so it loads)."""
    per_worker = max(fraction * sum(footprints.values()) / workers, 1.05 * max(footprints.values()))
    return round(per_worker / 2**30, 4)


# -- the load: http_client's, with seeded sampling -------------------------------------------------------------
async def stream_sampled(client: httpx.AsyncClient, target: Target, req: BenchRequest, temperature: float,
                         clock: Callable[[], float] = time.perf_counter) -> StreamRecord:
    """http_client.stream_completion, sampling at `temperature` with a seed per request (same output in
    both setups). Greedy decoding of a random-weight model tends to repeat one token forever, and when
    that token is a lone byte of a UTF-8 character no text is ever streamed (no TTFT: a failure)."""
    body = completion_body(target, req) | {"temperature": temperature, "seed": int(req.request_id.split("-")[-1])}
    return await stream_completion(client, target, req, clock, body)


def run_load_sampled(target: Target, requests: Sequence[BenchRequest], arrivals: ArrivalProcess, temperature: float,
                     on_done: Callable[[StreamRecord], None] | None = None) -> LoadResult:
    """http_client.run_load_sync (no warm-up) with stream_sampled."""
    async def go() -> LoadResult:
        records: list[StreamRecord] = []
        async with make_client(target, arrivals.max_in_flight) as client:
            async def send(req: BenchRequest) -> None:
                record = await stream_sampled(client, target, req, temperature)
                records.append(record)
                if on_done is not None:
                    on_done(record)

            start = time.perf_counter()
            await arrivals.drive(requests, send)
            wall_s = time.perf_counter() - start
        return LoadResult(wall_s, records, start_s=start)

    return asyncio.run(go())


# -- the process sampler ------------------------------------------------------------------------------------
class ChildSampler:
    """Background thread: the direct children of `pid` (the gateway's workers), their start and last sight."""

    def __init__(self, pid: int, interval_s: float = 0.5, clock: Callable[[], float] = time.time):
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.clock = clock
        self.lifetimes: dict[int, tuple[float, float]] = {}
        self.cmdlines: dict[int, str] = {}
        self.cpu_s: dict[int, tuple[float, float]] = {}   # CPU seconds used: at first and at last sight
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-sampler", daemon=True)

    def sample(self) -> None:
        now = self.clock()
        try:
            children = self.root.children(recursive=False)
        except psutil.NoSuchProcess:
            return
        for child in children:
            try:
                born = child.create_time()
                if child.pid not in self.cmdlines:
                    self.cmdlines[child.pid] = " ".join(child.cmdline())
                times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            first = self.lifetimes.get(child.pid, (born, now))[0]
            self.lifetimes[child.pid] = (first, now)
            used = times.user + times.system
            self.cpu_s[child.pid] = (self.cpu_s.get(child.pid, (used, used))[0], used)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def worker_cpu_s(self) -> float:
        """CPU seconds the workers used while sampled (from the sampler's start to its stop)."""
        return sum(last - first for pid, (first, last) in self.cpu_s.items() if pid in self.workers())

    def workers(self) -> dict[int, tuple[float, float]]:
        """Lifetimes of the children that are infercloud workers (`infercloud serve --config ...`)."""
        return {pid: t for pid, t in self.lifetimes.items() if "infercloud serve --config" in self.cmdlines.get(pid, "")}


# -- the clouds -------------------------------------------------------------------------------------------------
def engine_config(args: argparse.Namespace) -> dict:
    return {"num_kv_blocks": args.num_kv_blocks, "max_num_seqs": args.max_num_seqs}


def pooled_config(models: Sequence[TailModel], args: argparse.Namespace, memory_gb: float) -> dict:
    autoscaling = {"min_replicas": 0, "max_replicas": args.max_replicas, "idle_to_zero_s": args.idle_to_zero_s}
    return {"cluster": {"threads_per_worker": args.threads,
                        "pools": [{"name": "tail", "workers": args.pool_workers, "memory_gb": memory_gb,
                                   "threads": args.threads}]},
            "controller": {"probe_interval_s": args.probe_interval_s},
            "models": [{"name": m.name, "pool": "tail", "replicas": 0, "engine": engine_config(args),
                        "autoscaling": dict(autoscaling)} for m in models]}


def dedicated_config(models: Sequence[TailModel], args: argparse.Namespace) -> dict:
    return {"cluster": {"threads_per_worker": args.threads},
            "controller": {"probe_interval_s": args.probe_interval_s},
            "models": [{"name": m.name, "replicas": 1, "engine": engine_config(args)} for m in models]}


def ensure_models(home: Path, models: Sequence[TailModel]) -> None:
    """Create the random models under home/models (skipping those already there), SmolLM2's tokenizer linked in."""
    from infercloud.models.catalog import models_dir, resolve_model
    from infercloud.models.random_model import RandomModelSpec, create_random_model

    vocab = resolve_model(VOCAB_FROM)  # from the home the bench was started with
    os.environ["INFERCLOUD_HOME"] = str(home)
    models_dir().mkdir(parents=True, exist_ok=True)
    link = models_dir() / VOCAB_FROM
    if not link.exists():
        link.symlink_to(vocab.resolve())
    for m in models:
        if not (models_dir() / m.name).exists():
            create_random_model(m.name, RandomModelSpec(m.layers, m.hidden, seed=m.seed))


def footprints(models: Sequence[TailModel], args: argparse.Namespace) -> dict[str, int]:
    from infercloud.engine.config import EngineConfig
    from infercloud.engine.footprint import model_memory_bytes
    from infercloud.models.catalog import resolve_model

    engine = EngineConfig(**engine_config(args))
    return {m.name: model_memory_bytes(resolve_model(m.name), "chat", engine) for m in models}


def pool_stats(base_url: str, log_text: str) -> dict:
    """Loads and evictions so far, summed over the pool workers' own counters (their /internal/state)."""
    state = internal_state(base_url)
    urls = [w["url"] for w in state.get("pool_workers") or ()] or \
        sorted(set(re.findall(r"started pool worker \S+ at (\S+)", log_text)))
    loads = evictions = 0
    for url in urls:
        worker = internal_state(url)
        loads += worker.get("num_loads") or 0
        evictions += worker.get("num_evictions") or 0
    return {"worker_loads": loads, "worker_evictions": evictions}


def wait_pool_ready(base_url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = internal_state(base_url).get("pool_workers")
        if workers is None or (workers and all(w["state"] == "ready" for w in workers)):
            if workers is None:  # a gateway that does not list its pool workers: give them a moment
                time.sleep(5)
            return
        time.sleep(0.2)
    raise TimeoutError("the pool workers did not become ready")


def run_setup(name: str, config: dict, work_dir: Path, models: Sequence[TailModel], requests: list[BenchRequest],
              args: argparse.Namespace, slo: Slo) -> dict:
    peer = CloudPeer(config, home=work_dir / name)
    started = time.monotonic()
    peer.start(free_port())
    try:
        if name == "pooled":
            wait_pool_ready(peer.base_url)
        startup_s = time.monotonic() - started
        target = Target(peer.base_url, models[0].name)
        warm = run_load_sampled(target, warmup_requests(models, args.input_len, args.seed), ClosedLoop(1),
                                args.temperature)
        sampler = ChildSampler(peer.process.pid, args.sample_s)
        sampler.start()
        log_offset = len(peer.log_path.read_text(errors="replace"))
        before = pool_stats(peer.base_url, peer.log_path.read_text(errors="replace")) if name == "pooled" else None
        wall_minus_perf = time.time() - time.perf_counter()
        done = [0]

        def progress(record: StreamRecord) -> None:
            done[0] += 1
            if not args.no_progress and done[0] % 50 == 0:
                print(f"  {name}: {done[0]}/{len(requests)} done", file=sys.stderr, flush=True)

        arrivals = GammaArrivals(args.rate, 1.0, np.random.default_rng(args.seed + 1))
        load = run_load_sampled(target, requests, arrivals, args.temperature, on_done=progress)
        sampler.stop()
        log_text = peer.log_path.read_text(errors="replace")
        after = pool_stats(peer.base_url, log_text) if name == "pooled" else None
        state = internal_state(peer.base_url)
    finally:
        peer.stop()
    start = load.start_s + wall_minus_perf
    end = start + load.wall_s
    workers = sampler.workers()
    result = {"startup_s": startup_s, "warmup_failed": sum(not r.ok for r in warm.records),
              "summary": load.summary(slo), "good_fraction": load.num_good(slo) / len(load.records),
              "device_seconds": device_seconds(workers, args.threads, start, end),
              "worker_processes": len(workers), "worker_cpu_s": sampler.worker_cpu_s(),
              "worker_processes_alive_whole_window": sum(b <= start and last >= end for b, last in workers.values()),
              "per_model": per_model(load, requests, models, slo), "log": str(peer.log_path),
              "requests": request_rows(load, requests)}
    if name == "pooled":
        window_log = log_text[log_offset:]
        counted = pool_stats_from_log(window_log)
        result["pool"] = {"memory_gb_per_worker": config["cluster"]["pools"][0]["memory_gb"],
                          "worker_loads": after["worker_loads"] - before["worker_loads"],
                          "worker_evictions": after["worker_evictions"] - before["worker_evictions"],
                          **counted,
                          "models_loaded_at_end": {w["worker_id"]: w["models"] for w in state.get("pool_workers") or ()}}
    return result


def pool_stats_from_log(log_text: str) -> dict:
    return {"controller_loads": len(re.findall(r"infercloud\.controller: replica \S+: \S+ loaded on", log_text)),
            "controller_saw_evicted": len(re.findall(r"unloaded to make room for", log_text)),
            "scaled_to_zero": len(re.findall(r"infercloud\.controller: autoscaler: \S+ 1 -> 0", log_text)),
            "load_failures": len(re.findall(r"loading \S+ on \S+ failed", log_text))}


def request_rows(load: LoadResult, requests: list[BenchRequest]) -> list[dict]:
    """Each request in a line: its model, when it was sent, its latencies or its error."""
    model_of = {r.request_id: r.model for r in requests}
    return [{"request_id": r.request_id, "model": model_of[r.request_id], "send_offset_s": r.send_s - load.start_s,
             "ttft_s": r.ttft_s, "tpot_s": r.tpot_s, "e2el_s": r.e2el_s, "completion_tokens": r.completion_tokens,
             "error": r.error} for r in load.records]


def per_model(load: LoadResult, requests: list[BenchRequest], models: Sequence[TailModel], slo: Slo) -> list[dict]:
    model_of = {r.request_id: r.model for r in requests}
    rows = []
    for m in models:
        records = [r for r in load.records if model_of[r.request_id] == m.name]
        done = [r for r in records if r.ok]
        rows.append({"model": m.name, "rank": m.rank, "layers": m.layers, "hidden": m.hidden,
                     "requests": len(records), "failed": len(records) - len(done),
                     "good": sum(slo.is_met_by(r) for r in records),
                     "ttft_s": summarize([r.ttft_s for r in done if r.ttft_s is not None]),
                     "tpot_s": summarize([r.tpot_s for r in done if r.tpot_s is not None])})
    return rows


def run(args: argparse.Namespace) -> dict:
    from infercloud.paths import infercloud_home

    original_home = infercloud_home()
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="infercloud-w8-"))
    home = Path(args.home) if args.home else work_dir / "home"
    models = tail_models(args.models)
    ensure_models(home, models)  # sets INFERCLOUD_HOME for this process and the clouds it starts
    sizes = footprints(models, args)
    memory_gb = args.pool_memory_gb or pool_memory_gb(sizes, args.pool_memory_fraction, args.pool_workers)
    num_requests = round(args.rate * args.duration)
    requests = make_requests(models, num_requests, args.zipf_s, args.input_len, args.output_len, args.seed)
    slo = parse_slo(args.slo)
    setups = {"pooled": pooled_config(models, args, memory_gb), "dedicated": dedicated_config(models, args)}
    results = {}
    try:
        for name in args.order.split(","):
            if not args.no_progress:
                print(f"{name}: starting", file=sys.stderr, flush=True)
            results[name] = run_setup(name, setups[name], work_dir, models, requests, args, slo)
    finally:
        os.environ["INFERCLOUD_HOME"] = str(original_home)
    pooled, dedicated = results.get("pooled"), results.get("dedicated")
    comparison = None
    if pooled and dedicated:
        gp, gd = (r["summary"]["goodput_req_s"] for r in (pooled, dedicated))
        comparison = {"device_seconds_saving": 1 - pooled["device_seconds"] / dedicated["device_seconds"],
                      "goodput_ratio_pooled_over_dedicated": gp / gd if gd else None,
                      "device_seconds_per_good_request": {
                          k: r["device_seconds"] / r["summary"]["good_requests"] if r["summary"]["good_requests"]
                          else None for k, r in results.items()}}
        comparison["target_met"] = comparison["device_seconds_saving"] >= 0.8 and \
            comparison["goodput_ratio_pooled_over_dedicated"] is not None and \
            comparison["goodput_ratio_pooled_over_dedicated"] >= 0.95
    share = zipf_weights(len(models), args.zipf_s)
    return {"workload": "W8", "num_models": len(models), "zipf_s": args.zipf_s,
            "models": [{"name": m.name, "rank": m.rank, "layers": m.layers, "hidden": m.hidden,
                        "footprint_bytes": sizes[m.name], "share": float(share[m.rank - 1])} for m in models],
            "footprint_total_bytes": sum(sizes.values()), "home": str(home),
            "rate_req_s": args.rate, "duration_s": args.duration, "num_requests": num_requests,
            "input_len": args.input_len, "output_len": args.output_len, "seed": args.seed,
            "temperature": args.temperature,
            "slo": {k: v for k, v in vars(slo).items() if v is not None},
            "engine": engine_config(args), "threads_per_worker": args.threads,
            "pool": {"workers": args.pool_workers, "memory_gb_per_worker": memory_gb,
                     "memory_fraction_of_all_models": memory_gb * 2**30 * args.pool_workers / sum(sizes.values()),
                     "max_replicas": args.max_replicas, "idle_to_zero_s": args.idle_to_zero_s},
            "probe_interval_s": args.probe_interval_s, "setups": results, "comparison": comparison}


def print_report(report: dict) -> None:
    print(f"W8 long tail: {report['num_models']} models, Zipf s={report['zipf_s']}, Poisson {report['rate_req_s']} "
          f"req/s for {report['duration_s']} s ({report['num_requests']} requests), {report['input_len']} in / "
          f"{report['output_len']} out; SLO {report['slo']}")
    p = report["pool"]
    print(f"pooled: {p['workers']} workers x {1024 * p['memory_gb_per_worker']:.0f} MiB "
          f"({100 * p['memory_fraction_of_all_models']:.0f} % of all models' footprints); dedicated: one process per model")
    header = (f"{'setup':<10}{'goodput r/s':>12}{'good %':>8}{'failed':>7}{'TTFT p50':>9}{'p90 ms':>8}"
              f"{'TPOT p50':>9}{'p90 ms':>8}{'workers':>8}{'device-s':>10}{'CPU-s':>7}")
    print(header)
    for name, r in report["setups"].items():
        s = r["summary"]
        print(f"{name:<10}{s['goodput_req_s']:>12.3f}{100 * r['good_fraction']:>8.1f}{s['failed']:>7}"
              f"{_ms(s['ttft_s']['p50']):>9}{_ms(s['ttft_s']['p90']):>8}{_ms(s['tpot_s']['p50']):>9}"
              f"{_ms(s['tpot_s']['p90']):>8}{r['worker_processes']:>8}{r['device_seconds']:>10.0f}"
              f"{r['worker_cpu_s']:>7.0f}")
    if "pooled" in report["setups"]:
        pool = report["setups"]["pooled"]["pool"]
        print(f"pooled in the window: {pool['worker_loads']} loads, {pool['worker_evictions']} evictions (workers' "
              f"counters), {pool['scaled_to_zero']} idle models scaled to zero, {pool['load_failures']} failed loads")
    c = report["comparison"]
    if c is not None:
        ratio = c["goodput_ratio_pooled_over_dedicated"]
        print(f"device-seconds saving 1 - pooled/dedicated: {100 * c['device_seconds_saving']:.1f} %; goodput "
              f"pooled/dedicated: {'-' if ratio is None else f'{ratio:.3f}'}; target (>= 80 % at equal goodput): "
              f"{'met' if c['target_met'] else 'NOT met'}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.longtail", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=12, help="random-weight models (default 12)")
    parser.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of popularity (default 1.1)")
    parser.add_argument("--rate", type=float, default=4.0, help="Poisson arrivals, requests/s (default 4)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of arrivals (default 120)")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=48)
    parser.add_argument("--slo", default="ttft_ms=2000,tpot_ms=200")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature, seeded per request (default 1: see stream_sampled)")
    parser.add_argument("--pool-workers", type=int, default=2)
    parser.add_argument("--pool-memory-fraction", type=float, default=0.4,
                        help="pool memory (all workers) as a fraction of all models' footprints (default 0.4)")
    parser.add_argument("--pool-memory-gb", type=float, default=None, help="per worker; overrides the fraction")
    parser.add_argument("--max-replicas", type=int, default=1, help="pooled autoscaling max (default 1)")
    parser.add_argument("--idle-to-zero-s", type=float, default=30.0, help="pooled: idle this long -> unloaded")
    parser.add_argument("--num-kv-blocks", type=int, default=128, help="per model (default 128 x 16 tokens)")
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--probe-interval-s", type=float, default=0.5)
    parser.add_argument("--sample-s", type=float, default=0.5, help="how often worker processes are sampled")
    parser.add_argument("--order", default="pooled,dedicated", help="setups to run, in order")
    parser.add_argument("--home", default=None, help="INFERCLOUD_HOME holding (or to hold) the models")
    parser.add_argument("--work-dir", default=None, help="configs and logs (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the report here as JSON")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    return run_and_report(args, run, print_report)


if __name__ == "__main__":
    sys.exit(main())
