"""`infercloud bench compare`: the same workloads against infercloud and its peers, one side-by-side table.

For each peer in turn (one at a time, so they never share the machine): install it if needed, start
it on a free 127.0.0.1 port, run every workload at every concurrency through `run_bench` (each
workload and concurrency with its own seed, the same for every peer: every peer gets the same prompts, and
no server is sent a prompt it served at another concurrency, which its prefix cache would answer), stop it. A peer that cannot be installed or started is reported and skipped.
Then DIR/compare.md (also printed) and DIR/compare.json hold, per workload and concurrency and peer:
output tok/s, TTFT p50/p90, TPOT p50, completed/failed, and the ratios infercloud / peer (output
tok/s: above 1 is infercloud faster; TTFT p50: below 1 is infercloud faster). Every run's full JSON
(each request's timeline) goes to DIR/runs/, plots to DIR/plots/.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from infercloud.bench.metrics import Slo
from infercloud.bench.plots import plot_latency_cdfs, plot_throughput
from infercloud.bench.report import machine_info, write_json
from infercloud.bench.serve import DEFAULT_SLO, BenchConfig, BenchResult, fresh_seed, run_bench, run_seed, workload_json
from infercloud.bench.workloads import Workload

REFERENCE = "infercloud"


class Peer(Protocol):
    """What compare needs of a peer (infercloud.bench.peers): lifecycle and where it answers."""

    name: str

    @property
    def base_url(self) -> str: ...

    @property
    def served_model(self) -> str: ...

    def install(self) -> None: ...

    def start(self, port: int) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class CompareConfig:
    workloads: tuple[Workload, ...]
    concurrencies: tuple[int, ...]
    peers: tuple[str, ...]
    out_dir: Path
    num_requests: int | None = None
    num_warmup: int = 2
    slo: Slo | None = DEFAULT_SLO
    seed: int = 0
    vllm_extras: bool = True   # only for peers that accept them (Peer.supports_vllm_extras)
    progress: bool = True


@dataclass
class CompareResult:
    results: dict[str, list[BenchResult]] = field(default_factory=dict)  # by peer name
    peer_errors: dict[str, str] = field(default_factory=dict)

    def summary(self, peer: str, workload: str, concurrency: int) -> dict | None:
        for result in self.results.get(peer, []):
            if result.config.workload.name == workload and result.config.concurrency == concurrency:
                return result.summary
        return None


def run_compare(config: CompareConfig, get_peer: Callable[[str], Peer] | None = None,
                port: Callable[[], int] | None = None) -> CompareResult:
    """Every peer in turn over every workload x concurrency; writes runs/ and plots/ as it goes."""
    for workload in config.workloads:
        if workload.requests(np.random.default_rng(0), 1)[0].send_offset_s is not None:
            raise ValueError(f"{workload.name} runs on its own schedule; compare runs closed-loop workloads only")
    get_peer = get_peer or _registry_get_peer
    port = port or free_port
    out = CompareResult()
    for name, peer in [(name, get_peer(name)) for name in config.peers]:  # unknown names fail before any run
        if not getattr(peer, "accepts_token_ids", True):
            # every system must see the same tokens; text would be re-tokenized differently
            out.peer_errors[name] = "does not accept token-id prompts (compare llamacpp-server instead)"
            print(f"bench compare: {name} skipped: {out.peer_errors[name]}", file=sys.stderr)
            continue
        try:
            peer.install()
            peer.start(port())
        except Exception as exc:  # noqa: BLE001 - one broken peer must not stop the others
            peer.stop()
            out.peer_errors[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            print(f"bench compare: {name} skipped: {out.peer_errors[name]}", file=sys.stderr)
            continue
        try:
            out.results[name] = [_run_one(config, peer, name, w, c) for w in config.workloads for c in config.concurrencies]
        finally:
            peer.stop()
    _write_plots(config, out)
    return out


def _run_one(config: CompareConfig, peer: Peer, name: str, workload: Workload, concurrency: int) -> BenchResult:
    """One run; its file is named by the peer's full name (settings included: two settings of one peer are two files)."""
    extras = config.vllm_extras and getattr(peer, "supports_vllm_extras", True)
    result = run_bench(BenchConfig(peer.base_url, peer.served_model, workload, concurrency=concurrency,
                                   num_requests=config.num_requests, num_warmup=config.num_warmup, slo=config.slo,
                                   seed=run_seed(config.seed, workload.name, concurrency), vllm_extras=extras,
                                   progress=config.progress))
    stem = name.replace(":", "_").replace("=", "-").replace(",", "_")
    write_json(config.out_dir / "runs" / f"{stem}-{workload.name}-c{concurrency}.json", {"peer": name, **result.to_json()})
    return result


def markdown_header(config: CompareConfig, box: dict) -> str:
    """What the table measured: workloads with their shapes, request counts, the box and its ceilings."""
    shapes = "; ".join(f"{w.name} ({', '.join(f'{k}={v}' for k, v in workload_json(w).items() if k != 'name')})"
                       for w in config.workloads)
    machine = machine_info()
    ceilings = ", ".join(f"{k.removesuffix('_gflops').removesuffix('_gbs')} {v}" for k, v in box.items())
    return (f"Workloads: {shapes}. Requests per run: {config.num_requests or 'the default'}, warm-up "
            f"{config.num_warmup}, seed {config.seed} (each workload and concurrency its own run seed), closed "
            f"loop. Machine: {machine['cpu_model']} ({', '.join(machine['cpu_flags']) or 'no AVX'}), "
            f"{machine['cpus']} CPUs, {machine['platform']}. Measured ceilings (GEMM GFLOP/s, memory GB/s): "
            f"{ceilings}.")


def markdown_table(config: CompareConfig, compare: CompareResult) -> str:
    lines = ["| workload | concurrency | peer | output tok/s | TTFT p50 ms | TTFT p90 ms | TPOT p50 ms "
             "| completed / failed | infercloud / peer: tok/s | infercloud / peer: TTFT p50 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for workload in config.workloads:
        for c in config.concurrencies:
            ref = compare.summary(REFERENCE, workload.name, c)
            for peer in config.peers:
                s = compare.summary(peer, workload.name, c)
                if s is None:
                    lines.append(f"| {workload.name} | {c} | {peer} | not run | | | | | | |")
                    continue
                lines.append(f"| {workload.name} | {c} | {peer} | {s['output_throughput_tok_s']:.1f} "
                             f"| {_ms(s['ttft_s']['p50'])} | {_ms(s['ttft_s']['p90'])} | {_ms(s['tpot_s']['p50'])} "
                             f"| {s['completed']} / {s['failed']} "
                             f"| {_ratio(ref, s, lambda x: x['output_throughput_tok_s'])} "
                             f"| {_ratio(ref, s, lambda x: x['ttft_s']['p50'])} |")
    lines += [f"\n{peer}: not run: {error}" for peer, error in compare.peer_errors.items()]
    return "\n".join(lines)


def compare_json(config: CompareConfig, compare: CompareResult, box: dict) -> dict:
    return {"box_ceilings": box, "config": {"workloads": [workload_json(w) for w in config.workloads],
                       "concurrencies": list(config.concurrencies),
                       "peers": list(config.peers), "num_requests": config.num_requests,
                       "num_warmup": config.num_warmup, "seed": config.seed,
                       "slo": None if config.slo is None else vars(config.slo)},
            "peer_errors": compare.peer_errors,
            "runs": [{"peer": peer, "config": r.config.to_json(), "summary": r.summary}
                     for peer, results in compare.results.items() for r in results]}


def _write_plots(config: CompareConfig, compare: CompareResult) -> None:
    plots = config.out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for workload in config.workloads:
        mine = {peer: [r for r in results if r.config.workload.name == workload.name]
                for peer, results in compare.results.items()}
        if len(config.concurrencies) >= 2:
            series = {peer: [(r.config.concurrency, r.summary["output_throughput_tok_s"]) for r in results]
                      for peer, results in mine.items()}
            plot_throughput(series, plots / f"throughput_{workload.name}.png", f"{workload.name}: output throughput")
        for c in config.concurrencies:
            runs = [(peer, r.load) for peer, results in mine.items() for r in results if r.config.concurrency == c]
            if runs:
                plot_latency_cdfs(runs, plots / f"latency_cdf_{workload.name}_c{c}.png")


def compare_main(args: argparse.Namespace) -> int:
    """`bench compare`: run, then write and print the table. 1 if a peer was skipped or a request failed."""
    from infercloud.bench.serve import slo_from_arg, workload_from_args

    config = CompareConfig(tuple(workload_from_args(args, name) for name in args.workload),
                           tuple(args.concurrency), tuple(args.peers), Path(args.out),
                           num_requests=args.num_requests, num_warmup=args.warmup, slo=slo_from_arg(args.slo),
                           seed=args.seed if args.seed is not None else fresh_seed(),
                           vllm_extras=not args.no_vllm_extras, progress=not args.no_progress)
    from infercloud.bench.box import ceilings

    box = ceilings()   # before any peer runs: the box alone
    compare = run_compare(config)
    table = f"{markdown_header(config, box)}\n\n{markdown_table(config, compare)}"
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / "compare.md").write_text(table + "\n")
    write_json(config.out_dir / "compare.json", compare_json(config, compare, box))
    print(table)
    print(f"\nwritten: {config.out_dir / 'compare.md'}, {config.out_dir / 'compare.json'}")
    failed = any(r.load.failures for results in compare.results.values() for r in results)
    return 1 if compare.peer_errors or failed else 0


def _ratio(ref: dict | None, peer: dict, value: Callable[[dict], float | None]) -> str:
    if ref is None:
        return "-"
    mine, theirs = value(ref), value(peer)
    return "-" if mine is None or not theirs else f"{mine / theirs:.2f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _registry_get_peer(name: str) -> Peer:
    from infercloud.bench.peers import get_peer

    return get_peer(name)
