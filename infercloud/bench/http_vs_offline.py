"""HTTP serving vs the offline engine on W1: what the server path (HTTP, SSE, asyncio) costs in throughput.

`python -m infercloud.bench.http_vs_offline --concurrency 32 --requests 64 --out FILE.json`
One invocation, two runs one after the other, the same requests (W1: 128 random prompt tokens, 128 out,
greedy, EOS ignored), the same engine config (the default EngineConfig with prefix caching off, since W1
repeats prompts) and the same warm-up (distinct prompts, not counted):
  1. offline: the engine in this process, closed loop at c (closed_loop.py);
  2. HTTP: `infercloud serve` in a child process on a free 127.0.0.1 port with only the chat model, the
     requests streamed at c (http_client.py); SIGTERM stops it afterwards.
Then a markdown table: output tok/s of both, HTTP / offline (target >= 0.90), HTTP latencies, failures.
Both processes share this machine's cores, so the client's own CPU time is reported beside the server's
(per thread, from /proc: the main thread is the event loop).

INFERCLOUD_BENCH_PROFILE=DIR runs the server under cProfile, one profile per thread (DIR/<thread>.prof,
main.prof is the event loop), and prints the top functions of each. Profiling slows the server: its
throughput is then no measurement.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import torch
import yaml

from infercloud.bench.closed_loop import ClosedLoopResult, run_closed_loop
from infercloud.bench.http_client import (DEFAULT_NUM_WARMUP, ClosedLoop, LoadResult, Target, internal_state,
                                          run_load_sync)
from infercloud.bench.workloads import BenchRequest, w1_requests
from infercloud.cluster.local import free_port, stop_process
from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.models.catalog import model_path
from infercloud.models.local import LocalModel

MODEL = "smollm2-135m-instruct"
TARGET_RATIO = 0.90
PROFILE_ENV = "INFERCLOUD_BENCH_PROFILE"

# Runs `python -m infercloud ...` with a cProfile profiler on every thread; argv[1] is the output folder.
_PROFILED_LAUNCHER = """
import cProfile, runpy, sys, threading
out = sys.argv[1]
def _dump(prof, name):
    prof.disable()
    prof.dump_stats(f"{out}/{name}.prof")
_run = threading.Thread.run
def run(self):
    prof = cProfile.Profile()
    prof.enable()
    try:
        _run(self)
    finally:
        _dump(prof, "thread-" + self.name.replace("/", "_"))
threading.Thread.run = run
sys.argv = ["infercloud"] + sys.argv[2:]
main = cProfile.Profile()
main.enable()
try:
    runpy.run_module("infercloud", run_name="__main__")
except SystemExit:
    pass
finally:
    _dump(main, "main")
"""


@dataclass(frozen=True)
class Plan:
    concurrency: int = 32
    num_requests: int = 64
    prompt_len: int = 128
    max_tokens: int = 128
    num_warmup: int = DEFAULT_NUM_WARMUP
    seed: int = 0
    startup_timeout_s: float = 180.0

    def engine_config(self) -> EngineConfig:
        return EngineConfig(enable_prefix_caching=False)

    def server_config(self, port: int) -> dict:
        return {"host": "127.0.0.1", "port": port,
                "models": [{"name": MODEL, "kind": "chat", "engine": {"enable_prefix_caching": False}}]}


# -- offline -------------------------------------------------------------------------------------------
def run_offline(model_dir: Path, plan: Plan, requests: list[BenchRequest], warmup: list[BenchRequest]) -> dict:
    engine = LLMEngine(model_dir, plan.engine_config())
    if warmup:
        run_closed_loop(engine, warmup, len(warmup), id_prefix="warmup-")
    cpu_start = time.process_time()
    result: ClosedLoopResult = run_closed_loop(engine, requests, plan.concurrency, id_prefix="offline-")
    cpu_s = time.process_time() - cpu_start
    out = dict(result.to_json(), process_cpu_s=cpu_s, torch_threads=torch.get_num_threads(),
               request_throughput_req_s=len(result.requests) / result.wall_s)
    del engine
    gc.collect()
    return out


# -- HTTP ----------------------------------------------------------------------------------------------
class ServerProcess:
    """`infercloud serve` as a child process: started on a free port, healthy before use, stopped by SIGTERM."""

    def __init__(self, plan: Plan, workdir: Path, profile_dir: Path | None):
        self.port = free_port()
        config_path = workdir / "serve.yaml"
        config_path.write_text(yaml.safe_dump(plan.server_config(self.port)))
        self.log_path = workdir / "serve.log"
        serve = ["serve", "--config", str(config_path)]
        if profile_dir is None:
            cmd = [sys.executable, "-m", "infercloud", *serve]
        else:
            profile_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-c", _PROFILED_LAUNCHER, str(profile_dir), *serve]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def state(self) -> dict:
        return internal_state(self.url)

    def stop(self) -> int:
        return stop_process(self.proc, 60)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of `pid`, by thread id, from /proc (Linux only)."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
    return cpu


def run_http(plan: Plan, requests: list[BenchRequest], warmup: list[BenchRequest], profile_dir: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="http-vs-offline-") as tmp:
        server = ServerProcess(plan, Path(tmp), profile_dir)
        try:
            server.wait_healthy(plan.startup_timeout_s)
            state = server.state()
            target = Target(server.url, MODEL)
            if warmup:
                run_load_sync(target, warmup, ClosedLoop(len(warmup)))
            before = thread_cpu_s(server.proc.pid)
            result: LoadResult = run_load_sync(target, requests, ClosedLoop(plan.concurrency))
            after = thread_cpu_s(server.proc.pid)
        finally:
            exit_code = server.stop()
            log_tail = server.log_tail()
    threads = sorted(((tid, after[tid] - before.get(tid, 0.0)) for tid in after), key=lambda t: -t[1])
    return dict(result.to_json(), server_exit_code=exit_code, server_log_tail=log_tail,
                server_torch_threads=state.get("num_threads"),
                server_thread_cpu_s=[{"tid": tid, "main": tid == server.proc.pid, "cpu_s": cpu}
                                     for tid, cpu in threads if cpu > 0])


def profile_summary(profile_dir: Path, top: int = 25) -> str:
    """The `top` functions by own time of each thread's profile."""
    parts = []
    for path in sorted(profile_dir.glob("*.prof")):
        stats = pstats.Stats(str(path))
        if stats.total_tt < 0.5:  # idle helper threads
            continue
        parts.append(f"== {path.stem}: {stats.total_tt:.1f} s profiled ==")
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
        for (file, line, func), (_, ncalls, tottime, cumtime, _) in rows:
            parts.append(f"{tottime:8.2f} s own {cumtime:8.2f} s cum {ncalls:9d} calls  "
                         f"{Path(file).name}:{line} {func}")
    return "\n".join(parts)


# -- report --------------------------------------------------------------------------------------------
def markdown_table(results: dict) -> str:
    off, http = results["offline"], results["http"]
    ratio = results["ratio_http_over_offline"]
    met = "yes" if ratio >= TARGET_RATIO else "**no**"

    def lat(block: dict) -> str:
        if block["mean"] is None:
            return "—"
        return " / ".join(f"{block[k] * 1000:.0f}" for k in ("mean", "p50", "p90", "p99"))

    lines = [f"W1 ({results['plan']['prompt_len']} in / {results['plan']['max_tokens']} out), concurrency "
             f"{results['plan']['concurrency']}, {results['plan']['num_requests']} requests, "
             f"{results['plan']['num_warmup']} warm-up",
             "",
             "| metric | offline engine | HTTP server (streaming) | HTTP / offline | target | met |",
             "|---|---|---|---|---|---|",
             f"| output tok/s | {off['output_throughput_tok_s']:.1f} | {http['output_throughput_tok_s']:.1f} "
             f"| {ratio:.3f} | ≥ {TARGET_RATIO:.2f} | {met} |",
             f"| requests/s | {off['request_throughput_req_s']:.3f} | {http['request_throughput_req_s']:.3f} "
             f"| {http['request_throughput_req_s'] / off['request_throughput_req_s']:.3f} | | |",
             f"| wall s | {off['wall_s']:.1f} | {http['wall_s']:.1f} | | | |",
             f"| TTFT ms mean / p50 / p90 / p99 | {lat(off['ttft_s'])} | {lat(http['ttft_s'])} | | | |",
             f"| TPOT ms mean / p50 / p90 / p99 | {lat(off['tpot_s'])} | {lat(http['tpot_s'])} | | | |",
             f"| ITL ms mean / p50 / p90 / p99 | — | {lat(http['itl_s'])} | | | |",
             f"| E2EL ms mean / p50 / p90 / p99 | {lat(off['e2e_s'])} | {lat(http['e2el_s'])} | | | |",
             f"| completed / failed | {off['num_requests']} / 0 | {http['completed']} / {http['failed']} "
             f"{http['failures'] or ''} | | | |",
             f"| CPU s during the run | {off['process_cpu_s']:.1f} (engine process) "
             f"| {_server_cpu(http)} + client {http['client_cpu_s']:.1f} | | | |"]
    return "\n".join(lines)


def _server_cpu(http: dict) -> str:
    threads = http["server_thread_cpu_s"]
    total = sum(t["cpu_s"] for t in threads)
    main = sum(t["cpu_s"] for t in threads if t["main"])
    others = ", ".join(f"{t['cpu_s']:.1f}" for t in threads if not t["main"] and t["cpu_s"] >= 0.1)
    return f"server {total:.1f} (event loop {main:.1f}; other threads {others})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.http_vs_offline",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=Plan.concurrency)
    parser.add_argument("--requests", type=int, default=Plan.num_requests)
    parser.add_argument("--max-tokens", type=int, default=Plan.max_tokens)
    parser.add_argument("--warmup", type=int, default=Plan.num_warmup)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for every raw number")
    args = parser.parse_args(argv)
    plan = Plan(concurrency=args.concurrency, num_requests=args.requests, max_tokens=args.max_tokens,
                num_warmup=args.warmup)
    profile_dir = Path(os.environ[PROFILE_ENV]) if os.environ.get(PROFILE_ENV) else None
    model_dir = model_path(MODEL)
    vocab_size = LocalModel.open(model_dir).hf_config["vocab_size"]
    requests = w1_requests(plan.num_requests, vocab_size, plan.seed, plan.prompt_len, plan.max_tokens)
    warmup = [BenchRequest(f"warmup-{r.request_id}", r.prompt_token_ids, r.max_tokens)
              for r in w1_requests(plan.num_warmup, vocab_size, plan.seed + 1, plan.prompt_len, plan.max_tokens)]
    started = time.perf_counter()
    _log("offline engine run ...")
    offline = run_offline(model_dir, plan, requests, warmup)
    _log(f"offline: {offline['output_throughput_tok_s']:.1f} tok/s; HTTP server run ...")
    http = run_http(plan, requests, warmup, profile_dir)
    _log(f"HTTP: {http['output_throughput_tok_s']:.1f} tok/s")
    results = {"plan": asdict(plan), "model": MODEL, "command": " ".join(sys.argv),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
               "profiled": profile_dir is not None, "offline": offline, "http": http,
               "ratio_http_over_offline": http["output_throughput_tok_s"] / offline["output_throughput_tok_s"],
               "total_s": time.perf_counter() - started}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(markdown_table(results))
    if profile_dir is not None:
        print("\n(profiled run: throughput not comparable)\n" + profile_summary(profile_dir))
    print(f"\ntotal {results['total_s']:.0f} s" + (f"; raw: {args.out}" if args.out else ""))
    return 0 if http["failed"] == 0 else 1


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
