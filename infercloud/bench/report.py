"""Benchmark reports: the terminal summary table of `bench serve` runs and the JSON file with its provenance."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infercloud.bench.serve import BenchResult

LATENCIES = (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("ITL", "itl_s"), ("E2EL", "e2el_s"))
STATS = ("mean", "p50", "p90", "p99")


def format_summary(results: Sequence[BenchResult]) -> str:
    """One column per run, one row per number (latencies in ms); failures by kind below the table."""
    summaries = [r.summary for r in results]
    rows = [["metric", *(r.config.label for r in results)],
            ["completed / failed", *(f"{s['completed']} / {s['failed']}" for s in summaries)],
            ["wall s", *(f"{s['wall_s']:.2f}" for s in summaries)],
            ["requests/s", *(f"{s['request_throughput_req_s']:.3f}" for s in summaries)],
            ["output tok/s", *(f"{s['output_throughput_tok_s']:.1f}" for s in summaries)],
            ["total tok/s", *(f"{s['total_token_throughput_tok_s']:.1f}" for s in summaries)],
            ["goodput req/s", *(_goodput(s) for s in summaries)]]
    for title, key in LATENCIES:
        rows += [[f"{title} ms {stat}", *(_ms(s[key][stat]) for s in summaries)] for stat in STATS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    slos = {json.dumps(s["slo"]) for s in summaries if s["slo"]}
    lines += [f"goodput SLO: {slo}" for slo in sorted(slos)]
    lines += [f"{r.config.label}: failures {s['failures']}" for r, s in zip(results, summaries) if s["failures"]]
    lines += [f"{r.config.label}: {s['warmup_failures']} warm-up requests failed"
              for r, s in zip(results, summaries) if s["warmup_failures"]]
    return "\n".join(line.rstrip() for line in lines)


def write_json(path: Path, payload: dict) -> None:
    """`payload` plus the command line, the time and the machine, as indented JSON (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"command": " ".join(sys.argv), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(), **payload}
    path.write_text(json.dumps(full, indent=2))


def run_and_report(args, run, print_report) -> int:
    """A benchmark's main: run it, print its table, write the JSON report when `--out` was given."""
    report = run(args)
    print_report(report)
    if args.out:
        write_json(Path(args.out), report)
    return 0


def machine_info() -> dict:
    """The platform and the CPU (model, kernel-relevant flags: bench/box.py) a result was measured on."""
    from infercloud.bench.box import cpu_description

    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), **cpu_description()}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _goodput(summary: dict) -> str:
    if summary["goodput_req_s"] is None:
        return "-"
    return f"{summary['goodput_req_s']:.3f} ({summary['good_requests']}/{summary['num_requests']})"
