"""`infercloud bench serve`: one workload against any OpenAI-compatible server, as docs/benchmarks.md measures it.

`run_bench(BenchConfig) -> BenchResult` is the whole run and nothing else (compare.py calls it per
peer): draw the requests and the warm-up from one seed, pick the arrival process, stream every
request (http_client.py) with a progress bar, and keep the timelines. The seed is split three ways
(requests, warm-up, arrival gaps). A sweep (or `bench compare`) gives each run its own seed
(`run_seed`: the command's seed, the workload and the concurrency or rate), so every server sees the
same prompts at the same level and never one it has already served (its prefix cache would answer it);
the command's seed is fresh each time unless given (`--seed`), and recorded.
Arrivals: a fixed concurrency (default 1), or Gamma gaps at a rate with a burstiness; a workload
with its own schedule (W6) takes neither. The run is limited by a request count (default: the
workload's own size, else max(32, 4 x concurrency)) or by a duration (no new request after it).
`serve_main(args)` is the command line: a sweep over concurrencies, the terminal table, the JSON
file and the plots (report.py, plots.py).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import zlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from infercloud.bench.arrivals import ArrivalProcess, ClosedLoop, GammaArrivals, Scheduled, until
from infercloud.bench.http_client import DEFAULT_NUM_WARMUP, Target, run_load_sync
from infercloud.bench.metrics import LoadResult, Slo, StreamRecord, parse_slo
from infercloud.bench.workloads import (BenchRequest, Tokenize, Workload, WorkloadShape, is_scheduled, make_workload,
                                        request_rounds)

DEFAULT_SLO = Slo(ttft_ms=2000, tpot_ms=200)  # docs/benchmarks.md's example


@dataclass(frozen=True)
class BenchConfig:
    base_url: str                      # http://HOST:PORT (no /v1)
    model: str                         # the `model` every request carries
    workload: Workload
    concurrency: int | None = None     # closed loop; None with no rate: 1
    request_rate: float | None = None  # open loop, requests/s (inf: all at once)
    burstiness: float = 1.0            # Gamma shape: 1 Poisson, < 1 burstier
    num_requests: int | None = None
    duration_s: float | None = None
    num_warmup: int = DEFAULT_NUM_WARMUP
    slo: Slo | None = DEFAULT_SLO
    seed: int = 0
    vllm_extras: bool = True           # send ignore_eos
    extra_body: tuple[tuple[str, object], ...] = ()   # fields added to every request body
    progress: bool = True

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.request_rate is not None:
            raise ValueError("give a concurrency or a request rate, not both")
        if self.num_requests is not None and self.duration_s is not None:
            raise ValueError("give a request count or a duration, not both")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError("the request count must be at least 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("the duration must be positive")

    @property
    def label(self) -> str:
        if self.request_rate is not None:
            return f"{self.workload.name} rate={self.request_rate:g} b={self.burstiness:g}"
        return f"{self.workload.name} c={self.concurrency or 1}"

    def to_json(self) -> dict:
        fields = {k: v for k, v in vars(self).items() if k not in ("workload", "slo")}
        return {**fields, "label": self.label, "workload": workload_json(self.workload),
                "slo": None if self.slo is None else vars(self.slo)}


@dataclass
class BenchResult:
    config: BenchConfig
    load: LoadResult

    @property
    def summary(self) -> dict:
        return self.load.summary(self.config.slo)

    def to_json(self) -> dict:
        return {"config": self.config.to_json(), "summary": self.summary, "requests": self.load.request_rows()}


@dataclass
class Drawn:
    """What one run sends: its requests (a list, or a lazy stream for a duration), their count if known,
    the warm-up, and the arrival process."""

    requests: Iterable[BenchRequest]
    total: int | None
    warmup: list[BenchRequest]
    arrivals: ArrivalProcess


def draw(config: BenchConfig) -> Drawn:
    request_rng, warmup_rng, arrival_rng = (np.random.default_rng(s)
                                            for s in np.random.SeedSequence(config.seed).spawn(3))
    requests, total, scheduled, own_warmup = _requests(config, request_rng)
    arrivals = _arrivals(config, scheduled, arrival_rng)
    if own_warmup:  # the workload's own (W5: one request per tenant)
        warmup = [_as_warmup(r) for r in own_warmup]
    else:
        warmup = [_as_warmup(r) for r in config.workload.requests(warmup_rng, config.num_warmup)
                  if not r.is_warmup] if config.num_warmup > 0 else []
    return Drawn(requests, total, warmup, arrivals)


def run_bench(config: BenchConfig) -> BenchResult:
    drawn = draw(config)
    target = Target(config.base_url, config.model, vllm_extras=config.vllm_extras, extra_body=config.extra_body)
    with tqdm(total=drawn.total, desc=config.label, unit="req", disable=not config.progress, file=sys.stderr) as bar:
        load = run_load_sync(target, drawn.requests, drawn.arrivals, drawn.warmup, on_done=_progress(bar))
    return BenchResult(config, load)


def _requests(config: BenchConfig, rng: np.random.Generator
              ) -> tuple[Iterable[BenchRequest], int | None, bool, list[BenchRequest]]:
    """The requests (a list, or a lazy stream for a duration), their count if known, whether scheduled,
    and the workload's own warm-up requests (those it marks is_warmup)."""
    workload = config.workload
    if config.duration_s is None:
        num = config.num_requests or workload.natural_size or max(32, 4 * (config.concurrency or 1))
        drawn = workload.requests(rng, num)
        requests = [r for r in drawn if not r.is_warmup]
        return requests, len(requests), is_scheduled(requests), [r for r in drawn if r.is_warmup]
    rounds = request_rounds(workload, rng)
    first = next(rounds)
    if first.send_offset_s is not None:
        raise ValueError(f"{workload.name} has its own schedule: give a request count, not a duration")
    measured = (r for r in chain([first], rounds) if not r.is_warmup)
    return until(measured, config.duration_s, time.perf_counter), None, False, []


def _arrivals(config: BenchConfig, scheduled: bool, rng: np.random.Generator) -> ArrivalProcess:
    if scheduled:
        if config.concurrency is not None or config.request_rate is not None:
            raise ValueError(f"{config.workload.name} sends on its own schedule: give no concurrency or rate")
        return Scheduled()
    if config.request_rate is not None:
        return GammaArrivals(config.request_rate, config.burstiness, rng)
    return ClosedLoop(config.concurrency or 1)


def _as_warmup(req: BenchRequest) -> BenchRequest:
    return BenchRequest(f"warmup-{req.request_id}", req.prompt_token_ids, req.max_tokens, model=req.model,
                        tenant=req.tenant, region=req.region, is_warmup=True)


def _progress(bar: tqdm) -> Callable[[StreamRecord], None]:
    failed = 0

    def on_done(record: StreamRecord) -> None:
        nonlocal failed
        failed += not record.ok
        bar.update(1)
        if failed:
            bar.set_postfix(failed=failed)

    return on_done


def workload_json(workload: Workload) -> dict:
    """The workload's name and scalar parameters (not its prompts)."""
    params = {k: v for k, v in vars(workload).items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {"name": workload.name, **params}


# -- command line ---------------------------------------------------------------------------------------
def model_tokenizer(name_or_path: str) -> tuple[int, Tokenize]:
    """Vocabulary size and text -> ids of a local model (catalog name or folder), for prompts and JSONL."""
    from tokenizers import Tokenizer

    from infercloud.models.catalog import resolve_model
    from infercloud.models.local import LocalModel

    model = LocalModel.open(resolve_model(name_or_path))
    tokenizer = Tokenizer.from_file(str(model.tokenizer_file))
    return int(model.hf_config["vocab_size"]), lambda text: tokenizer.encode(text).ids


def workload_from_args(args: argparse.Namespace, name: str) -> Workload:
    """The workload `name` shaped by --input-len/--output-len/--range-ratio/--jsonl and the model's vocabulary.

    The vocabulary size and the tokenizer for JSONL text prompts come from the local model named by
    --tokenizer (default --model); --vocab-size stands in when the served model is not a local one.
    """
    vocab_size, tokenize = args.vocab_size, None
    tokenizer_name = args.tokenizer or args.model
    try:
        model_vocab, tokenize = model_tokenizer(tokenizer_name)
        vocab_size = vocab_size or model_vocab
    except (LookupError, OSError) as exc:
        if vocab_size is None:
            raise ValueError(f"no local tokenizer for '{tokenizer_name}' ({exc}): pass --tokenizer NAME|DIR "
                             "or --vocab-size N") from None
    shape = WorkloadShape(vocab_size, args.input_len, args.output_len, args.range_ratio,
                          None if args.jsonl is None else str(args.jsonl), tokenize)
    return make_workload(name, shape)


def slo_from_arg(text: str) -> Slo | None:
    return None if text.strip().lower() in ("", "none") else parse_slo(text)


def fresh_seed() -> int:
    """A new base seed for a command that was given none (recorded with its results)."""
    return secrets.randbits(32)


def run_seed(seed: int, workload: str, concurrency: int | None = None, request_rate: float | None = None) -> int:
    """The seed of one run: its own for each workload and each concurrency or rate, the same for every peer."""
    level = concurrency if concurrency is not None else round((request_rate or 0.0) * 1000) + 1_000_000
    return int(np.random.SeedSequence([seed, zlib.crc32(workload.encode()), level]).generate_state(1)[0])


def serve_main(args: argparse.Namespace) -> int:
    """`bench serve`: run each concurrency of the sweep (or the one rate), then report. 1 if any request failed."""
    from infercloud.bench.plots import write_plots
    from infercloud.bench.report import format_summary, write_json

    workload = workload_from_args(args, args.workload)
    seed = args.seed if args.seed is not None else fresh_seed()
    print(f"seed {seed}", file=sys.stderr)
    results = [run_bench(BenchConfig(args.base_url.rstrip("/"), args.model, workload, concurrency=c,
                                     request_rate=args.request_rate, burstiness=args.burstiness,
                                     num_requests=args.num_requests, duration_s=args.duration,
                                     num_warmup=args.warmup, slo=slo_from_arg(args.slo),
                                     seed=run_seed(seed, workload.name, c, args.request_rate),
                                     vllm_extras=not args.no_vllm_extras, progress=not args.no_progress,
                                     extra_body=tuple(args.extra_body.items())))
               for c in (args.concurrency or [None])]
    written = []
    if args.out is not None:
        write_json(Path(args.out), {"seed": seed, "runs": [r.to_json() for r in results]})
        written.append(args.out)
    if args.plots is not None:
        written += write_plots(Path(args.plots), results)
    print(format_summary(results))
    print("\n".join(f"written: {path}" for path in written))
    return 0 if all(r.load.failures == {} for r in results) else 1
