"""Offline benchmark of the engine against HF transformers: W1 decode, W4 shared prefix, cold start.

`python -m infercloud.bench.offline --workload w1|w4|coldstart|all --out FILE.json [--runs N]`
Same machine, same process, same requests for both systems (docs/benchmarks.md). Every raw number goes
to the JSON file; a markdown summary goes to stdout. Per-workload runners return plain dicts.
  - W1: one engine (prefix caching off: the runs repeat the same prompts, and HF caches nothing),
    closed loop at each concurrency; HF sequential on the first `hf_requests` of the same prompts.
    Runs are interleaved (HF, c=1, c=8, ... per run); medians over runs.
  - W4: one engine with prefix caching, one without, same requests at a fixed concurrency.
  - Cold start: fresh child processes (see coldstart.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from infercloud.bench.closed_loop import greedy_params, run_closed_loop, summarize
from infercloud.bench.coldstart import measure_cold_start
from infercloud.bench.hf_peer import hf_batch1_decode_tpot, load_hf_model, run_hf_sequential
from infercloud.bench.workloads import w1_requests, w4_requests
from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.models.catalog import model_path
from infercloud.models.local import LocalModel

MODEL = "smollm2-135m-instruct"
NUM_THREADS = 2
# Ceilings of the 2-core development box for SmolLM2-135M fp32 (docs/benchmarks.md, "Limits of the machine").
DECODE_CEILING_TOK_S = 500.0   # compute: ~140 GFLOP/s / ~0.27 GFLOP per token, any batch size
BATCH1_CEILING_TOK_S = 37.0    # bandwidth: ~20 GB/s / 540 MB of weights read per step


@dataclass(frozen=True)
class BenchConfig:
    runs: int = 3                      # W1 c <= 8 and HF: runs per point (medians reported)
    runs_large: int = 1                # W1 c > 8: runs per point (c=64 alone is ~1 min)
    concurrencies: tuple[int, ...] = (1, 8, 32, 64)
    hf_requests: int = 4
    w1_min_requests: int = 8           # N = max(2 * c, w1_min_requests)
    w4_questions: int = 8              # of 16 in the full W4; 8 keeps W4 under ~4 minutes here
    w4_concurrency: int = 4
    coldstart_runs: int = 3
    seed: int = 0

    def w1_num_requests(self, concurrency: int) -> int:
        return max(2 * concurrency, self.w1_min_requests)

    def w1_runs(self, concurrency: int) -> int:
        return self.runs if concurrency <= 8 else self.runs_large


def make_engine(model_dir: Path, prefix_caching: bool) -> LLMEngine:
    engine = LLMEngine(model_dir, EngineConfig(num_threads=NUM_THREADS, enable_prefix_caching=prefix_caching))
    engine.generate([list(range(1000, 1064))], greedy_params(4))  # first-call costs out of the timings
    return engine


def _median(values: list[float]) -> float:
    return statistics.median(values)


# -- W1 ----------------------------------------------------------------------------------------------
def bench_w1(model_dir: Path, cfg: BenchConfig, vocab_size: int) -> dict:
    engine = make_engine(model_dir, prefix_caching=False)
    hf = load_hf_model(model_dir)
    num_prompts = max([cfg.w1_num_requests(c) for c in cfg.concurrencies] + [cfg.hf_requests])
    prompts = w1_requests(num_prompts, vocab_size, cfg.seed)
    hf_prompts = prompts[:cfg.hf_requests]
    hf_warmup = hf_batch1_decode_tpot(hf, hf_prompts[0].prompt_token_ids, 4)
    raw: dict = {"hf_sequential": [], "hf_batch1": [], "infercloud": {c: [] for c in cfg.concurrencies}}
    for run in range(max(cfg.runs, cfg.runs_large)):
        if run < cfg.runs:
            raw["hf_sequential"].append(run_hf_sequential(hf, hf_prompts).to_json())
            raw["hf_batch1"].append(hf_batch1_decode_tpot(hf, hf_prompts[0].prompt_token_ids, 128))
        for c in cfg.concurrencies:
            if run < cfg.w1_runs(c):
                result = run_closed_loop(engine, prompts[:cfg.w1_num_requests(c)], c, id_prefix=f"run{run}-c{c}-")
                raw["infercloud"][c].append(result.to_json())
                _log(f"W1 run {run} c={c}: {result.output_throughput:.1f} tok/s")
    raw["engine_stats"] = asdict(engine.stats())
    del engine, hf
    gc.collect()
    return {"raw": raw, "summary": _summarize_w1(raw, cfg), "hf_warmup": hf_warmup}


def _summarize_w1(raw: dict, cfg: BenchConfig) -> dict:
    hf_tput = _median([r["output_throughput_tok_s"] for r in raw["hf_sequential"]])
    hf_decode = _median([r["decode_tok_s"] for r in raw["hf_batch1"]])
    per_c = {}
    for c, runs in raw["infercloud"].items():
        tput = _median([r["output_throughput_tok_s"] for r in runs])
        per_c[c] = {"runs": len(runs), "num_requests": runs[0]["num_requests"], "output_throughput_tok_s": tput,
                    "ratio_vs_hf_sequential": tput / hf_tput, "fraction_of_decode_ceiling": tput / DECODE_CEILING_TOK_S,
                    "ttft_mean_s": _median([r["ttft_s"]["mean"] for r in runs]),
                    "ttft_p90_s": _median([r["ttft_s"]["p90"] for r in runs]),
                    "tpot_mean_s": _median([r["tpot_s"]["mean"] for r in runs])}
    ic_decode = 1.0 / per_c[min(per_c)]["tpot_mean_s"]
    return {
        "hf_sequential_tok_s": hf_tput, "hf_runs": len(raw["hf_sequential"]), "hf_requests": cfg.hf_requests,
        "hf_fraction_of_decode_ceiling": hf_tput / DECODE_CEILING_TOK_S,
        "batch1_decode_tok_s": {"infercloud": ic_decode, "hf": hf_decode, "ratio": ic_decode / hf_decode,
                                "infercloud_fraction_of_bw_ceiling": ic_decode / BATCH1_CEILING_TOK_S,
                                "hf_fraction_of_bw_ceiling": hf_decode / BATCH1_CEILING_TOK_S},
        "infercloud": per_c,
    }


# -- W4 ----------------------------------------------------------------------------------------------
def bench_w4(model_dir: Path, cfg: BenchConfig, vocab_size: int) -> dict:
    requests = w4_requests(vocab_size, num_questions=cfg.w4_questions, seed=cfg.seed)
    raw = {}
    for caching in (True, False):
        engine = make_engine(model_dir, prefix_caching=caching)
        before = engine.stats()
        tag = "on" if caching else "off"
        result = run_closed_loop(engine, requests, cfg.w4_concurrency, id_prefix=f"cache-{tag}-")
        after = engine.stats()
        queried = after.prefix_cache_queried_tokens - before.prefix_cache_queried_tokens
        hits = after.prefix_cache_hit_tokens - before.prefix_cache_hit_tokens
        computed = (after.num_prompt_tokens_computed - before.num_prompt_tokens_computed
                    + after.num_generated_tokens - before.num_generated_tokens)
        raw[tag] = dict(
            result.to_json(), prefix_cache_hit_rate=hits / queried if queried else 0.0,
            engine_stats=asdict(after), computed_tokens=computed, computed_tok_s=computed / result.wall_s,
            ttft_s_cache_hits=summarize([r.ttft_s for r in result.requests if r.num_cached_tokens > 0]))
        _log(f"W4 prefix caching {tag}: wall {result.wall_s:.1f} s")
        del engine
        gc.collect()
    on, off = raw["on"], raw["off"]
    summary = {
        "num_requests": len(requests), "num_prefixes": 8, "num_questions": cfg.w4_questions,
        "concurrency": cfg.w4_concurrency,
        **{f"ttft_{k}_s": {"on": on["ttft_s"][k], "off": off["ttft_s"][k]} for k in ("mean", "p50", "p90")},
        "ttft_mean_ratio_off_over_on": off["ttft_s"]["mean"] / on["ttft_s"]["mean"],
        "ttft_mean_on_cache_hits_only_s": on["ttft_s_cache_hits"]["mean"],
        "wall_s": {"on": on["wall_s"], "off": off["wall_s"]},
        "prefix_cache_hit_rate": {"on": on["prefix_cache_hit_rate"], "off": off["prefix_cache_hit_rate"]},
        "computed_tok_s_fraction_of_compute_ceiling": {k: raw[k]["computed_tok_s"] / DECODE_CEILING_TOK_S
                                                       for k in ("on", "off")},
    }
    return {"raw": raw, "summary": summary}


# -- cold start --------------------------------------------------------------------------------------
def bench_coldstart(model_dir: Path, cfg: BenchConfig) -> dict:
    runs = [measure_cold_start(model_dir) for _ in range(cfg.coldstart_runs)]
    keys = ("total_s", "import_s", "load_s", "first_token_s", "other_s")
    return {"raw": runs, "summary": {f"median_{k}": _median([r[k] for r in runs]) for k in keys}
            | {"runs": len(runs)}}


# -- report ------------------------------------------------------------------------------------------
def markdown_summary(results: dict) -> str:
    lines = ["| workload | metric | infercloud (W4: cache on) | HF (W4: cache off) | ratio | of machine limit "
             "| target | met |",
             "|---|---|---|---|---|---|---|---|"]
    if "w1" in results:
        s = results["w1"]["summary"]
        hf = s["hf_sequential_tok_s"]
        for c, p in s["infercloud"].items():
            target, met = ("≥ 8x", _yes(p["ratio_vs_hf_sequential"] >= 8)) if int(c) == 64 else ("", "")
            lines.append(f"| W1 c={c} ({p['runs']} run(s)) | output tok/s | {p['output_throughput_tok_s']:.1f} "
                         f"| {hf:.1f} | {p['ratio_vs_hf_sequential']:.2f}x "
                         f"| {p['fraction_of_decode_ceiling']:.0%} of 500 | {target} | {met} |")
        b = s["batch1_decode_tok_s"]
        lines.append(f"| W1 batch 1 | decode tok/s | {b['infercloud']:.1f} | {b['hf']:.1f} | {b['ratio']:.2f}x "
                     f"| {b['infercloud_fraction_of_bw_ceiling']:.0%} / {b['hf_fraction_of_bw_ceiling']:.0%} of 37 "
                     f"| ≥ 1x | {_yes(b['ratio'] >= 1)} |")
    if "w4" in results:
        s = results["w4"]["summary"]
        for k in ("mean", "p50", "p90"):
            on, off = s[f"ttft_{k}_s"]["on"], s[f"ttft_{k}_s"]["off"]
            target, met = ("≥ 3x", _yes(off / on >= 3)) if k == "mean" else ("", "")
            lines.append(f"| W4 ({s['num_requests']} req) | TTFT {k} s, cache on / off | {on:.3f} | {off:.3f} "
                         f"| {off / on:.2f}x | | {target} | {met} |")
        hits = s["ttft_mean_on_cache_hits_only_s"]
        if hits is not None:
            lines.append(f"| W4 | TTFT mean s, cache hits only (on) | {hits:.3f} | | | | | |")
        lines.append(f"| W4 | wall s on / off; hit rate | {s['wall_s']['on']:.1f} | {s['wall_s']['off']:.1f} "
                     f"| hit rate {s['prefix_cache_hit_rate']['on']:.0%} | | | |")
    if "coldstart" in results:
        s = results["coldstart"]["summary"]
        lines.append(f"| cold start ({s['runs']} runs) | launch → first token s | {s['median_total_s']:.2f} | | "
                     f"| import {s['median_import_s']:.2f} + load {s['median_load_s']:.2f} + first "
                     f"{s['median_first_token_s']:.2f} + other {s['median_other_s']:.2f} "
                     f"| ≤ 3 s | {_yes(s['median_total_s'] <= 3)} |")
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.offline", description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("w1", "w4", "coldstart", "all"), default="all")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=BenchConfig.runs, help="runs of W1 c<=8, HF and cold start")
    parser.add_argument("--runs-large", type=int, default=BenchConfig.runs_large, help="runs of W1 c>8")
    parser.add_argument("--w4-questions", type=int, default=BenchConfig.w4_questions)
    args = parser.parse_args(argv)
    cfg = BenchConfig(runs=args.runs, runs_large=args.runs_large, w4_questions=args.w4_questions,
                      coldstart_runs=args.runs)
    torch.set_num_threads(NUM_THREADS)
    model_dir = model_path(MODEL)
    vocab_size = LocalModel.open(model_dir).hf_config["vocab_size"]
    selected = ("coldstart", "w1", "w4") if args.workload == "all" else (args.workload,)
    results: dict = {
        "config": asdict(cfg), "model": MODEL, "model_dir": str(model_dir), "threads": NUM_THREADS,
        "command": " ".join(sys.argv), "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "limits": {"decode_ceiling_tok_s": DECODE_CEILING_TOK_S, "batch1_ceiling_tok_s": BATCH1_CEILING_TOK_S}}
    started = time.perf_counter()
    for name in selected:
        if name == "coldstart":
            results["coldstart"] = bench_coldstart(model_dir, cfg)
        elif name == "w1":
            results["w1"] = bench_w1(model_dir, cfg, vocab_size)
        else:
            results["w4"] = bench_w4(model_dir, cfg, vocab_size)
    results["total_s"] = time.perf_counter() - started
    args.out.write_text(json.dumps(results, indent=2))
    print(markdown_summary(results))
    print(f"\nruns: W1 c<=8 and HF {cfg.runs}, W1 c>8 {cfg.runs_large}; W4 {cfg.w4_questions} questions x 8 "
          f"prefixes, 1 run each; cold start {cfg.coldstart_runs}; total {results['total_s']:.0f} s; raw: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
