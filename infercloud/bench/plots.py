"""Benchmark plots as PNG files: latency CDFs (TTFT, TPOT, E2EL) and throughput against concurrency.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global figure state, no display).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from infercloud.bench.metrics import LoadResult

if TYPE_CHECKING:
    from infercloud.bench.serve import BenchResult

CDF_METRICS = (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("E2EL", "e2el_s"))


def write_plots(out_dir: Path, results: Sequence[BenchResult], prefix: str = "") -> list[Path]:
    """latency_cdf.png for every run; throughput_vs_concurrency.png when 2+ concurrencies were run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_latency_cdfs([(r.config.label, r.load) for r in results], out_dir / f"{prefix}latency_cdf.png")]
    points = sorted((r.config.concurrency, r.summary["output_throughput_tok_s"]) for r in results
                    if r.config.concurrency is not None)
    if len({c for c, _ in points}) >= 2:
        title = f"{results[0].config.workload.name}: output throughput"
        paths.append(plot_throughput({results[0].config.model: points}, out_dir / f"{prefix}throughput_vs_concurrency.png",
                                     title))
    return paths


def plot_latency_cdfs(runs: Sequence[tuple[str, LoadResult]], path: Path) -> Path:
    """One panel per latency metric, one empirical CDF per run (completed requests only)."""
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (title, attr) in zip(fig.subplots(1, len(CDF_METRICS)), CDF_METRICS):
        for label, load in runs:
            values = np.sort([v * 1000 for r in load.completed if (v := getattr(r, attr)) is not None])
            if values.size:
                ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=label)
        ax.set(title=f"{title} CDF", xlabel=f"{title} (ms)", ylabel="fraction of requests", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_throughput(series: dict[str, Sequence[tuple[int, float]]], path: Path, title: str) -> Path:
    """Output tokens/s against concurrency, one line per series (a server, a peer)."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, points in series.items():
        if points:
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=label)
    ax.set(title=title, xlabel="concurrency", ylabel="output tokens/s", xscale="log")
    ax.set_ylim(bottom=0)
    concurrencies = sorted({c for points in series.values() for c, _ in points})
    ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
    ax.minorticks_off()
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.savefig(path, dpi=100)
    return Path(path)
