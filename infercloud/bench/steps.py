"""Decode step time of the engine alone, at given batch sizes, for each engine setting: where a step's time goes.

For each setting and batch size B: B requests with fresh random prompts of --context tokens are prefilled,
then --steps decode steps are timed (every request decoding, greedy, ignore_eos). Prints ms per step and
output tokens/s; with --profile, the top operators of those steps (torch.profiler).

    python -m infercloud.bench.steps --batch 1,16,64 --setting dtype=bfloat16 --setting dtype=bfloat16,quantization=int8
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.engine.sampling import SamplingParams


def parse_setting(text: str) -> dict[str, str]:
    """`dtype=bfloat16,quantization=int8` -> EngineConfig fields."""
    return dict(pair.split("=", 1) for pair in text.split(",") if pair)


def time_steps(engine: LLMEngine, batch: int, context: int, steps: int, seed: int, profile: bool = False) -> dict:
    rng = random.Random(seed)
    ids = [f"steps-{seed}-{batch}-{i}" for i in range(batch)]
    vocab = engine.model.cfg.vocab_size
    for rid in ids:
        engine.add_request(rid, [rng.randrange(100, vocab) for _ in range(context)],
                           SamplingParams(max_tokens=steps + 8, temperature=0.0, ignore_eos=True))
    while engine.scheduler.waiting or any(r.num_output_tokens == 0 for r in engine.scheduler.running):
        engine.step()
    for _ in range(2):
        engine.step()
    table = None
    start = time.perf_counter()
    if profile:
        from torch.profiler import profile as torch_profile

        with torch_profile() as prof:
            for _ in range(steps):
                engine.step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    else:
        for _ in range(steps):
            engine.step()
    step_s = (time.perf_counter() - start) / steps
    for rid in ids:
        engine.abort_request(rid)
    engine.step()
    return {"batch": batch, "ms_per_step": round(step_s * 1000, 2), "tok_s": round(batch / step_s, 1),
            "profile": table}


def main(argv: list[str] | None = None) -> int:
    from infercloud.models.catalog import model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", default="1,16,64", help="batch sizes, comma-separated")
    parser.add_argument("--setting", action="append", default=None,
                        help="engine fields for one setting, k=v pairs joined by commas (repeatable; default: "
                        "dtype=float32, dtype=bfloat16, dtype=bfloat16,quantization=int8)")
    parser.add_argument("--context", type=int, default=128, help="prompt tokens per request")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="default: fresh prompts on every run")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    settings = args.setting or ["dtype=float32", "dtype=bfloat16", "dtype=bfloat16,quantization=int8"]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    batches = [int(b) for b in args.batch.split(",")]
    results = []
    for setting in settings:
        fields = parse_setting(setting)
        engine = LLMEngine(model_path(args.model), EngineConfig(max_num_seqs=max(batches),
                                                               max_num_batched_tokens=2048, **fields))
        for batch in batches:
            r = time_steps(engine, batch, args.context, args.steps, seed, args.profile)
            print(f"{setting:<40} batch {batch:>3}: {r['ms_per_step']:>7.1f} ms/step {r['tok_s']:>7.1f} tok/s", flush=True)
            if r["profile"]:
                print(r["profile"])
            results.append({"setting": setting, **{k: v for k, v in r.items() if k != "profile"}})
    if args.out:
        Path(args.out).write_text(json.dumps({"seed": seed, "context": args.context, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
