"""Cold start: a fresh engine process (offline), and W7, scale-from-zero TTFT through the cloud.

Offline (used by bench/offline.py): the child (`python -m infercloud.bench.coldstart MODEL_DIR`) times
its own phases and prints one line, `FIRST_TOKEN {json}`, as soon as the first token of a short greedy
request exists, then exits. Parent (`measure_cold_start`): the clock starts just before the child is
launched and stops when the parent reads that line, so the total includes interpreter start-up and the
pipe. Whatever the child's phases do not cover (interpreter and runpy start-up, pipe latency) is
reported as `other_s`.

W7 (`python -m infercloud.bench.coldstart [--runs 10] [--out FILE.json]`): one cloud serves SmolLM2 under
two names, both autoscaled with min 0, max 1 and a short idle-to-zero: `w7-pooled` is placed on a
pool's shared worker (already running, memory for the model), so scaling from zero is a POST
/internal/load there; `w7-dedicated` has no pool, so scaling from zero starts a worker process. Each
round, for each setup in turn: wait until the model has no replica (and, pooled, its worker has
unloaded it), then send one streamed chat request (8 tokens out) and time TTFT (send -> first non-empty
content) and E2EL at the client. Setups: pooled with the weights in the page cache (`pooled_warm`),
pooled with the model's files dropped from the page cache before the request (`pooled_cold`:
posix_fadvise DONTNEED on every file of its folder, residency checked with mincore and `fincore`),
dedicated warm. The controller's and the workers' logs give each start's breakdown (the worker's
engine build, the controller's load call, process start to ready).

The cloud serves a private copy of the model folder: the kernel keeps a file's pages cached while any
process maps it (another server or test on the box), whatever fadvise says. Before each pooled run a
tiny random model (`w7-flush`) serves one token on the pool worker and is unloaded again: the worker's
step loop keeps the last model it stepped alive until it steps another, so without this the worker
would still map the SmolLM2 it unloaded and the cold runs would not be cold (--no-flush shows it).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # W7's imports are made inside its functions: the offline child must start fast
    import httpx

    from infercloud.bench.metrics import StreamRecord

MARKER = "FIRST_TOKEN "
PROMPT = "The capital of France is"


def child_main(model_dir: str) -> None:
    start = time.perf_counter()
    from infercloud.engine.config import EngineConfig
    from infercloud.engine.engine import LLMEngine
    from infercloud.engine.sampling import SamplingParams
    imported = time.perf_counter()
    engine = LLMEngine(model_dir, EngineConfig(num_threads=2))
    loaded = time.perf_counter()
    engine.add_request("coldstart", PROMPT, SamplingParams(max_tokens=1, temperature=0.0))
    token_ids: list[int] = []
    while not token_ids:
        token_ids = [t for out in engine.step() for c in out.outputs for t in c.delta_token_ids]
    first = time.perf_counter()
    breakdown = {"import_s": imported - start, "load_s": loaded - imported, "first_token_s": first - loaded,
                 "token_id": token_ids[0]}
    print(MARKER + json.dumps(breakdown), flush=True)


def measure_cold_start(model_dir: str | Path, python: str = sys.executable,
                       clock: Callable[[], float] = time.perf_counter) -> dict:
    """One cold start: launch -> first-token line read by the parent; plus the child's own breakdown."""
    launched = clock()
    child = subprocess.Popen([python, "-m", "infercloud.bench.coldstart", str(model_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    breakdown = None
    for line in child.stdout:
        if line.startswith(MARKER):
            total_s = clock() - launched
            breakdown = json.loads(line[len(MARKER):])
            break
    child.stdout.close()
    if child.wait() != 0 or breakdown is None:
        raise RuntimeError(f"cold-start child failed (exit status {child.returncode})")
    phases = breakdown["import_s"] + breakdown["load_s"] + breakdown["first_token_s"]
    return {"total_s": total_s, **breakdown, "other_s": total_s - phases}


# -- W7: scale from zero through the cloud -----------------------------------------------------------------
MODEL = "smollm2-135m-instruct"
POOLED, DEDICATED, FLUSH = "w7-pooled", "w7-dedicated", "w7-flush"
SETUPS = (("pooled_warm", POOLED, False), ("dedicated_warm", DEDICATED, False), ("pooled_cold", POOLED, True))
CHAT = [{"role": "user", "content": "The capital of France is"}]


def cloud_config(args: argparse.Namespace, model_dir: Path | str = MODEL, flush_dir: Path | str | None = None) -> dict:
    """Both setups in one cloud: the pooled name on a pool of one worker, the dedicated name on its own
    process; and, with `flush_dir`, a tiny pooled model (see `flush`)."""
    def autoscaling() -> dict:
        return {"min_replicas": 0, "max_replicas": 1, "idle_to_zero_s": args.idle_to_zero_s,
                "downscale_delay_s": args.idle_to_zero_s}

    def model(name: str, path: Path | str, engine: dict, pool: str | None) -> dict:
        return {"name": name, **({"pool": pool} if pool else {}), "path": str(path), "replicas": 0,
                "engine": engine, "autoscaling": autoscaling()}

    models = [model(POOLED, model_dir, {"kv_cache_memory_gb": args.kv_cache_gb}, "w7"),
              model(DEDICATED, model_dir, {"kv_cache_memory_gb": args.kv_cache_gb}, None)]
    if flush_dir is not None:
        models.append(model(FLUSH, flush_dir, {"num_kv_blocks": 16}, "w7"))
    return {"cluster": {"threads_per_worker": args.threads,
                        "pools": [{"name": "w7", "workers": 1, "memory_gb": args.pool_memory_gb,
                                   "threads": args.threads}]},
            "controller": {"probe_interval_s": args.probe_interval_s},
            "models": models}


# page cache: drop a model's files, and check how much of them is resident
_PROT_READ, _MAP_SHARED = 1, 1


def model_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).resolve().rglob("*") if p.is_file())


def drop_from_page_cache(folder: Path) -> None:
    """posix_fadvise(DONTNEED) on every file of the folder: the kernel drops their clean cached pages."""
    for path in model_files(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_pages(path: Path) -> tuple[int, int]:
    """(pages of the file in the page cache, pages of the file), by mincore(2) on a read-only mapping."""
    size = Path(path).stat().st_size
    page = os.sysconf("SC_PAGE_SIZE")
    total = -(-size // page)
    if total == 0:
        return 0, 0
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), f"mmap {path} failed")
        try:
            vec = (ctypes.c_ubyte * total)()
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path} failed")
            return sum(b & 1 for b in vec), total
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def private_copy(source: Path, parent: Path) -> Path:
    """A copy of the model folder that no other process maps (the kernel keeps mapped pages whatever
    fadvise says), written back to disk so that its pages are clean and can be dropped."""
    target = Path(parent) / Path(source).resolve().name
    if not target.exists():
        shutil.copytree(Path(source).resolve(), target)
    os.sync()
    return target


def mapped_by(folder: Path) -> list[int]:
    """Processes that map a file of the folder (their pages stay in the page cache)."""
    folder = str(Path(folder).resolve())
    pids = []
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if folder in maps.read_text():
                pids.append(int(maps.parent.name))
        except OSError:
            pass
    return sorted(pids)


def folder_residency(folder: Path) -> dict:
    """The folder's bytes in the page cache by mincore, and by util-linux `fincore` where it is installed."""
    page = os.sysconf("SC_PAGE_SIZE")
    counts = [resident_pages(p) for p in model_files(folder)]
    out = {"resident_bytes": page * sum(r for r, _ in counts), "total_bytes": page * sum(t for _, t in counts)}
    out["resident_fraction"] = out["resident_bytes"] / out["total_bytes"] if out["total_bytes"] else 0.0
    if shutil.which("fincore"):
        run = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES",
                              *map(str, model_files(folder))], check=False, capture_output=True, text=True)
        if run.returncode == 0:
            out["fincore_resident_bytes"] = sum(int(x) for x in run.stdout.split())
    return out


# the gateway's and workers' logs
_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def start_breakdown(log_text: str, model: str) -> dict:
    """What the gateway log says of the (last) start of `model` in `log_text`: the autoscaler's wake-up to
    the replica ready, and for a pooled replica the controller's load call, for a dedicated one the
    process start."""
    out: dict = {}
    wake = re.findall(_STAMP + rf" INFO infercloud\.controller: autoscaler: {re.escape(model)} 0 -> 1", log_text)
    loads = re.findall(_STAMP + rf" INFO infercloud\.controller: replica (\S+): {re.escape(model)} loaded on (\S+) "
                       r"in ([\d.]+) s", log_text)
    started = re.findall(_STAMP + rf" INFO infercloud\.controller: started replica ({re.escape(model)}-\d+) at", log_text)
    if loads:
        stamp, replica, worker, seconds = loads[-1]
        out.update(replica_id=replica, worker=worker, controller_load_s=float(seconds), ready_at=_stamp(stamp))
    elif started:
        stamp, replica = started[-1]
        ready = re.findall(_STAMP + rf" INFO infercloud\.controller: replica {re.escape(replica)} is ready", log_text)
        out.update(replica_id=replica, started_at=_stamp(stamp))
        if ready:
            out["ready_at"] = _stamp(ready[-1])
            out["process_start_to_ready_s"] = out["ready_at"] - out["started_at"]
    if wake and "ready_at" in out:
        out["wake_to_ready_s"] = out["ready_at"] - _stamp(wake[-1])
    return out


def worker_load_s(log_text: str, model: str) -> float | None:
    """The engine build time the worker logged for its last load of `model`."""
    found = re.findall(rf"infercloud\.worker: loaded {re.escape(model)} in ([\d.]+) s", log_text)
    return float(found[-1]) if found else None


class CloudLog:
    """The gateway's log (server.log of the peer), read in increments; where its workers log."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except OSError:
            return ""

    def mark(self) -> None:
        self.offset = len(self.text())

    def since_mark(self) -> str:
        return self.text()[self.offset:]

    def run_dir(self) -> Path | None:
        found = re.findall(r"workers log to (\S+)", self.text())
        return Path(found[-1]) if found else None

    def pool_worker_urls(self) -> list[str]:
        return sorted(set(re.findall(r"started pool worker \S+ at (\S+)", self.text())))


# one request and the wait before it
def stream_chat(client: httpx.Client, model: str, max_tokens: int,
                clock: Callable[[], float] = time.perf_counter) -> StreamRecord:
    """One streamed chat completion through the gateway, timed at the client (never raises)."""
    from infercloud.bench.metrics import StreamRecord

    body = {"model": model, "messages": CHAT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    record = StreamRecord(model, 0, send_s=clock())
    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                record.error = f"HTTP {response.status_code}: {response.read().decode(errors='replace')[:300]}"
            else:
                for line in response.iter_lines():
                    now = clock()
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    payload = json.loads(line[5:])
                    if payload.get("usage"):
                        record.completion_tokens = payload["usage"]["completion_tokens"]
                        record.num_prompt_tokens = payload["usage"]["prompt_tokens"]
                    if any((c.get("delta") or {}).get("content") for c in payload.get("choices") or ()):
                        record.content_times_s.append(now)
                if not record.content_times_s:
                    record.error = "no content: no chunk carried text"
    except Exception as exc:  # noqa: BLE001 - a failed request is recorded, not raised
        record.error = f"{type(exc).__name__}: {exc}"
    record.last_byte_s = clock()
    return record


def pool_worker_urls(state: dict, log: CloudLog) -> list[str]:
    """From the gateway's /internal/state when it lists its pool workers, else from its log."""
    listed = state.get("pool_workers")
    return [w["url"] for w in listed] if listed else log.pool_worker_urls()


def wait_all_at_zero(client: httpx.Client, log: CloudLog, timeout_s: float) -> float:
    """Until no model has a replica in the gateway's state and no pool worker holds a model; the wait."""
    import httpx

    from infercloud.bench.http_client import internal_state

    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        state = client.get("/internal/state").json()
        urls = pool_worker_urls(state, log)
        if not state["replicas"] and urls:
            try:  # the pool worker is still starting at first
                if not any(internal_state(u).get("models") for u in urls):
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    raise TimeoutError(f"models still have replicas after {timeout_s:.0f} s")


def flush(client: httpx.Client, log: CloudLog, timeout_s: float) -> None:
    """Serve one token of the tiny pooled model and wait until it is unloaded again.

    A worker's step loop keeps the last model it stepped alive after that model is unloaded (its
    weights stay mapped), until it steps another one: this makes that other one the tiny model, so that
    SmolLM2's pages can leave the page cache and each run starts from the same worker state."""
    record = stream_chat(client, FLUSH, 1)
    if not record.ok:
        raise RuntimeError(f"the flush request failed: {record.error}")
    wait_all_at_zero(client, log, timeout_s)


def measure_one(client: httpx.Client, log: CloudLog, model: str, cold: bool, model_dir: Path,
                args: argparse.Namespace) -> dict:
    pooled = model == POOLED
    if pooled and args.flush:
        flush(client, log, args.zero_timeout_s)
    row: dict = {"waited_for_zero_s": wait_all_at_zero(client, log, args.zero_timeout_s)}
    if cold:
        before = folder_residency(model_dir)
        drop_from_page_cache(model_dir)
        after = folder_residency(model_dir)
        row["page_cache"] = {"before": before, "after_drop": after}
        if after["resident_fraction"] > 0.01:
            row["page_cache"]["mapped_by_pids"] = mapped_by(model_dir)
    time.sleep(args.settle_s)
    log.mark()
    record = stream_chat(client, model, args.max_tokens)
    row.update(ok=record.ok, error=record.error, ttft_s=record.ttft_s, e2el_s=record.e2el_s,
               completion_tokens=record.completion_tokens, sent_at=time.time() - (time.perf_counter() - record.send_s))
    time.sleep(0.2)  # the controller's "ready" line may come a moment after the first token
    row.update(start_breakdown(log.since_mark(), model))
    worker_id = row.get("worker") or row.get("replica_id")  # a pool worker's id, or the dedicated replica's
    if (run_dir := log.run_dir()) is not None and worker_id is not None:
        worker_log = run_dir / f"{worker_id}.log"  # its last "loaded MODEL in S s" line is this start's
        row["worker_load_s"] = worker_load_s(worker_log.read_text(errors="replace"), model) \
            if worker_log.exists() else None
    if "ready_at" in row:
        row["send_to_ready_s"] = row["ready_at"] - row["sent_at"]
    return row


def make_flush_model(work_dir: Path, vocab_from: Path) -> Path:
    """A 1-layer random model (`infercloud models create-random`) in a home of its own under work_dir."""
    home = work_dir / "home"
    target = home / "models" / FLUSH
    if not target.exists():
        subprocess.run([sys.executable, "-m", "infercloud", "models", "create-random", FLUSH, "--layers", "1",
                        "--hidden", "64", "--vocab-from", str(vocab_from)],
                       env={**os.environ, "INFERCLOUD_HOME": str(home)}, check=True, capture_output=True)
    return target


def summarize_runs(rows: list[dict]) -> dict:
    """TTFT/E2EL summaries of the completed runs of one setup (failures counted apart)."""
    from infercloud.bench.metrics import summarize

    done = [r for r in rows if r["ok"] and r["ttft_s"] is not None]
    out = {"runs": len(rows), "completed": len(done), "failed": len(rows) - len(done),
           "ttft_s": summarize([r["ttft_s"] for r in done]), "e2el_s": summarize([r["e2el_s"] for r in done])}
    for key in ("worker_load_s", "controller_load_s", "process_start_to_ready_s", "send_to_ready_s"):
        values = [r[key] for r in done if r.get(key) is not None]
        if values:
            out[key] = summarize(values)
    return out


def run(args: argparse.Namespace) -> dict:
    import tempfile

    import httpx

    from infercloud.bench.peers.cloud import CloudPeer
    from infercloud.cluster.local import free_port
    from infercloud.internal_token import bearer, client_token
    from infercloud.models.catalog import resolve_model

    work_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="infercloud-w7-"))
    model_dir = private_copy(resolve_model(MODEL), work_dir / "models") if args.model_copy else resolve_model(MODEL)
    flush_dir = make_flush_model(work_dir, model_dir) if args.flush else None
    config = cloud_config(args, model_dir, flush_dir)
    peer = CloudPeer(config, home=work_dir)
    peer.start(free_port())
    log = CloudLog(peer.log_path)
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in SETUPS}
    try:
        with httpx.Client(base_url=peer.base_url, timeout=httpx.Timeout(600, connect=10), trust_env=False,
                          headers=bearer(client_token())) as client:
            for i in range(args.warmup + args.runs):
                for name, model, cold in SETUPS:
                    row = measure_one(client, log, model, cold, model_dir, args)
                    if i >= args.warmup:
                        rows[name].append(row)
                    if not args.no_progress:
                        ttft = "failed: " + str(row["error"]) if not row["ok"] else f"TTFT {1e3 * row['ttft_s']:.0f} ms"
                        print(f"{'warm-up' if i < args.warmup else f'run {i - args.warmup + 1}'} {name}: {ttft}",
                              file=sys.stderr, flush=True)
    finally:
        peer.stop()
    summaries = {name: summarize_runs(r) for name, r in rows.items()}
    p50 = {name: s["ttft_s"]["p50"] for name, s in summaries.items()}
    ratio = (p50["pooled_warm"] / p50["dedicated_warm"]
             if p50["pooled_warm"] is not None and p50["dedicated_warm"] else None)
    cold = [r["page_cache"]["after_drop"]["resident_fraction"] for r in rows["pooled_cold"]]
    return {"workload": "W7", "model": MODEL, "runs": args.runs, "warmup_rounds": args.warmup,
            "max_tokens": args.max_tokens, "threads_per_worker": args.threads,
            "engine": {"kv_cache_memory_gb": args.kv_cache_gb}, "pool_memory_gb": args.pool_memory_gb,
            "autoscaling": config["models"][0]["autoscaling"], "probe_interval_s": args.probe_interval_s,
            "flush_before_pooled_runs": args.flush, "log": str(peer.log_path), "model_dir": str(model_dir),
            "cold_runs_max_resident_fraction_after_drop": max(cold) if cold else None,
            "summary": summaries, "ttft_p50_ratio_pooled_over_dedicated": ratio,
            "target": {"pooled_warm_ttft_p50_s_at_most": 1.0,
                       "met": p50["pooled_warm"] is not None and p50["pooled_warm"] <= 1.0},
            "runs_detail": rows}


def print_report(report: dict) -> None:
    print(f"W7 scale from zero, {MODEL}, {report['runs']} runs per setup, {report['max_tokens']} tokens out:")
    print(f"{'setup':<16}{'TTFT p50 ms':>12}{'p90 ms':>9}{'mean ms':>9}{'E2EL p50 ms':>12}{'load p50 ms':>12}"
          f"{'failed':>8}")
    for name, s in report["summary"].items():
        t, e = s["ttft_s"], s["e2el_s"]
        load = s.get("worker_load_s", {}).get("p50")
        cells = [_ms(t["p50"]), _ms(t["p90"]), _ms(t["mean"]), _ms(e["p50"]), _ms(load)]
        print(f"{name:<16}{cells[0]:>12}{cells[1]:>9}{cells[2]:>9}{cells[3]:>12}{cells[4]:>12}{s['failed']:>8}")
    ratio = report["ttft_p50_ratio_pooled_over_dedicated"]
    if ratio is not None:
        print(f"TTFT p50 pooled / dedicated (both warm): {ratio:.3f}")
    met = "met" if report["target"]["met"] else "NOT met"
    print(f"target pooled warm TTFT p50 <= 1 s: {met}")
    if report["cold_runs_max_resident_fraction_after_drop"] is not None:
        print(f"pooled_cold: model files still in the page cache after the drop: at most "
              f"{100 * report['cold_runs_max_resident_fraction_after_drop']:.1f} % (mincore)")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.coldstart",
                                     description="W7: scale-from-zero TTFT, pooled vs dedicated worker.")
    parser.add_argument("--runs", type=int, default=10, help="measured runs per setup (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds first, not counted (default 1)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--kv-cache-gb", type=float, default=0.25, help="KV cache of the model (default 0.25)")
    parser.add_argument("--pool-memory-gb", type=float, default=2.0, help="the pool worker's budget (default 2)")
    parser.add_argument("--idle-to-zero-s", type=float, default=1.0, help="idle this long -> 0 replicas (default 1)")
    parser.add_argument("--probe-interval-s", type=float, default=0.5, help="the controller's tick (default 0.5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--settle-s", type=float, default=0.5,
                        help="pause once at zero, before the request (default 0.5)")
    parser.add_argument("--zero-timeout-s", type=float, default=120.0)
    parser.add_argument("--log-dir", default=None,
                        help="where the cloud's config and log and the model copy go (default: a temp dir)")
    parser.add_argument("--no-model-copy", dest="model_copy", action="store_false",
                        help="serve the model's own folder, not a private copy (another process mapping it "
                             "keeps its pages cached, so the cold runs may not be cold)")
    parser.add_argument("--no-flush", dest="flush", action="store_false",
                        help="no tiny-model request before pooled runs (it was needed while workers kept the "
                             "last unloaded model mapped; kept so runs compare with the recorded ones)")
    parser.add_argument("--out", default=None, help="write the report here as JSON")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from infercloud.bench.report import run_and_report

    return run_and_report(args, run, print_report)


if __name__ == "__main__":
    if len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
        child_main(sys.argv[1])  # the offline cold-start child: MODEL_DIR
    else:
        sys.exit(main())
