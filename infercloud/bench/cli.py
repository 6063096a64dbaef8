"""The `infercloud bench serve|compare` command line: argument parsers; the work is in serve.py and compare.py.

`add_bench_parser(commands)` registers `bench` on the top-level parser of infercloud/cli.py, in the
same style as its other commands (each action sets `args.run`). `main(argv)` runs just these
commands, as `python -m infercloud.bench.cli bench serve ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

DEFAULT_MODEL = "smollm2-135m-instruct"
WORKLOAD_HELP = ("W1 decode (128 in / 128 out), W2 prefill (1024 / 16), W3 mixed (lognormal lengths, medians "
                 "256 / 128), W4 shared prefix (8 prefixes of 1024 x 16 questions of 32, 32 out), W6 interference "
                 "(a 2048-token prompt at t=2 s among 8 streams of 128 / 256; its own schedule), random (uniform "
                 "lengths, see --range-ratio), jsonl (prompts from --jsonl FILE)")


def add_bench_parser(commands: argparse._SubParsersAction) -> None:
    """`infercloud bench serve|compare`: serving benchmarks as docs/benchmarks.md defines them."""
    bench = commands.add_parser(
        "bench",
        help="benchmark a serving endpoint, or infercloud against its peers",
        description="Serving benchmarks with the metrics of docs/benchmarks.md (those of `vllm bench serve`): TTFT, "
        "TPOT, ITL, E2EL (mean/p50/p90/p99), request and output throughput, goodput under an SLO.",
    )
    actions = bench.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    _add_serve(actions)
    _add_compare(actions)


def _add_serve(actions: argparse._SubParsersAction) -> None:
    serve = actions.add_parser(
        "serve",
        help="run one workload against any OpenAI-compatible server",
        description="Stream a workload's requests to /v1/completions (prompts as token ids, temperature 0) at a "
        "fixed concurrency or with Gamma-distributed arrivals; print a summary table and optionally write every "
        "request's timeline as JSON and latency/throughput plots as PNG. Exit status 1 if any request failed.",
    )
    serve.add_argument("--base-url", required=True, help="the server, e.g. http://127.0.0.1:8000 (no /v1)")
    serve.add_argument("--model", required=True, help="the `model` every request carries")
    serve.add_argument("--workload", required=True, metavar="NAME", help=f"one of: {WORKLOAD_HELP}")
    arrivals = serve.add_mutually_exclusive_group()
    arrivals.add_argument("--concurrency", type=_int_list, default=None, metavar="C[,C...]",
                          help="closed loop with C requests in flight; a list (1,16,64) runs a sweep (default 1)")
    arrivals.add_argument("--request-rate", type=float, default=None, metavar="R",
                          help="open loop: R requests/s on average with Gamma gaps (inf: all at once)")
    serve.add_argument("--burstiness", type=float, default=1.0, metavar="B",
                       help="Gamma shape of the gaps with --request-rate: 1 is Poisson, below 1 burstier (default 1)")
    limit = serve.add_mutually_exclusive_group()
    limit.add_argument("--num-requests", type=int, default=None, metavar="N",
                       help="requests to time (default: the workload's own size, else max(32, 4 x concurrency))")
    limit.add_argument("--duration", type=float, default=None, metavar="S",
                       help="send new requests for S seconds, then wait for those in flight")
    _add_common(serve)
    serve.add_argument("--extra-body", type=_json_object, default={}, metavar="JSON",
                       help='fields added to every request, e.g. \'{"response_format": {...}}\'')
    serve.add_argument("--out", type=str, default=None, metavar="FILE.json",
                       help="write config, summary and every request's timeline here")
    serve.add_argument("--plots", type=str, default=None, metavar="DIR",
                       help="write latency CDFs (and throughput against concurrency for a sweep) as PNG here")
    serve.set_defaults(run=run_bench_serve)


def _add_compare(actions: argparse._SubParsersAction) -> None:
    compare = actions.add_parser(
        "compare",
        help="run the same workloads against infercloud and its peers, side by side",
        description="For each peer in turn: install it on demand (its own virtualenv under the infercloud home), "
        "start it on this machine with the same model, run every workload at every concurrency, stop it. Writes "
        "DIR/compare.md and DIR/compare.json (output tok/s, TTFT p50/p90, TPOT p50, failures, ratios "
        "infercloud / peer), each run's JSON under DIR/runs/ and plots under DIR/plots/.",
    )
    compare.add_argument("--workload", action="append", required=True, metavar="NAME[,NAME...]",
                         help=f"repeatable; one of: {WORKLOAD_HELP}")
    compare.add_argument("--concurrency", type=_int_list, required=True, metavar="C[,C...]",
                         help="closed-loop concurrencies to run each workload at, e.g. 1,16,64")
    compare.add_argument("--peers", type=name_list, default=["infercloud", "vllm", "llamacpp", "hf-naive", "hf-static"],
                         metavar="NAME[,NAME...]",
                         help="servers to run, in order: infercloud, vllm, llamacpp, hf-naive, hf-static (default all)")
    compare.add_argument("--model", default=DEFAULT_MODEL,
                         help=f"the local model whose tokenizer and vocabulary shape the prompts (default {DEFAULT_MODEL})")
    compare.add_argument("--num-requests", type=int, default=None, metavar="N",
                         help="requests per run (default: the workload's own size, else max(32, 4 x concurrency))")
    _add_common(compare)
    compare.add_argument("--out", required=True, metavar="DIR", help="folder for the tables, runs and plots")
    compare.set_defaults(run=run_bench_compare)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-len", type=int, default=None, metavar="N",
                        help="override the prompt length (W1/W2/random: prompt; W3: median; W4: prefix; W6: long prompt)")
    parser.add_argument("--output-len", type=int, default=None, metavar="N",
                        help="override the output length (W1/W2/random/W4: output; W3: median; W6: the streams')")
    parser.add_argument("--range-ratio", type=float, default=0.5, metavar="R",
                        help="random workload: lengths uniform in L x [1-R, 1+R] (default 0.5)")
    parser.add_argument("--jsonl", type=str, default=None, metavar="FILE",
                        help='jsonl workload: one {"prompt": "text" or [ids], "max_tokens": N} per line')
    parser.add_argument("--tokenizer", default=None, metavar="NAME|DIR",
                        help="local model whose tokenizer/vocabulary to use (default: --model)")
    parser.add_argument("--vocab-size", type=int, default=None, metavar="N",
                        help="draw prompt ids below N (needed when the model is not a local one)")
    parser.add_argument("--warmup", type=int, default=2, metavar="K",
                        help="requests sent first, all at once, and not timed (default 2)")
    parser.add_argument("--slo", default="ttft_ms=2000,tpot_ms=200", metavar="KEY=MS[,...]",
                        help="goodput objectives: ttft_ms, tpot_ms, e2el_ms; 'none' for no goodput "
                        "(default ttft_ms=2000,tpot_ms=200)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of prompts, warm-up and arrival gaps; each run of a sweep derives its own from it "
                        "(default: a fresh one each time, printed and recorded)")
    parser.add_argument("--no-vllm-extras", action="store_true",
                        help="do not send ignore_eos (for servers that reject unknown fields); outputs may then "
                        "stop early at EOS")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_bench_serve(args: argparse.Namespace) -> int:
    from infercloud.bench.serve import serve_main

    return serve_main(args)


def run_bench_compare(args: argparse.Namespace) -> int:
    from infercloud.bench.compare import compare_main

    args.workload = [name for item in args.workload for name in name_list(item)]
    return compare_main(args)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return values


def name_list(text: str) -> list[str]:
    """Comma-separated names; a part `key=value` with no colon continues the previous name's settings, so
    `infercloud:quantization=int8,max_num_batched_tokens=2048,vllm` is two peers."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if "=" in part and ":" not in part and names and ":" in names[-1]:
            names[-1] += f",{part}"
        elif part:
            names.append(part)
    if not names:
        raise argparse.ArgumentTypeError("expected at least one name")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Run `bench ...` alone (before it is wired into infercloud/cli.py); user errors become one line."""
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.cli")
    add_bench_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (LookupError, OSError, ValueError) as exc:
        print(f"infercloud: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("infercloud: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
