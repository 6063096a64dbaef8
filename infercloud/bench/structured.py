"""`python -m infercloud.bench.structured`: what structured outputs cost on the engine's own path.

Measures, on the real model's tokenizer: loading xgrammar and its vocabulary table (once per engine);
compiling a JSON schema never seen before (each run makes fresh schemas, so nothing is cached) and one
already compiled (xgrammar's cache); and the per-step mask of a batch (fill every row's bitmask, then
one masked write into the logits) at the given batch size. The served comparison (W1 with and without
a schema, same server, same run) is `bench serve --extra-body`; docs/benchmarks.md has both commands.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from infercloud.engine.request import Request
from infercloud.engine.sampling import SamplingParams
from infercloud.engine.structured.grammars import Grammars
from infercloud.engine.structured.spec import StructuredSpec
from infercloud.engine.tokenizer import Tokenizer
from infercloud.models.catalog import resolve_model
from infercloud.models.local import LocalModel


def fresh_schema(rng: random.Random) -> dict:
    """An object of 3-8 fields of mixed kinds, with names no earlier run used."""
    tag = rng.getrandbits(40)
    kinds = [{"type": "string", "maxLength": rng.randint(4, 40)}, {"type": "integer", "minimum": 0,
             "maximum": rng.randint(10, 10**6)}, {"type": "boolean"}, {"enum": [f"v{tag}", "b", "c"]},
             {"type": "array", "items": {"type": "number"}, "maxItems": rng.randint(1, 8)}]
    props = {f"f{tag}_{i}": rng.choice(kinds) for i in range(rng.randint(3, 8))}
    return {"type": "object", "properties": props, "required": list(props)[: len(props) // 2 + 1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--schemas", type=int, default=50, help="fresh schemas to compile")
    parser.add_argument("--batch", type=int, default=64, help="rows in the masked batch")
    parser.add_argument("--steps", type=int, default=50, help="mask steps to time")
    args = parser.parse_args(argv)
    rng = random.Random(time.time_ns())
    local = LocalModel.open(resolve_model(args.model))
    tokenizer = Tokenizer(local)
    vocab = int(local.hf_config["vocab_size"])
    grammars = Grammars(tokenizer, vocab, args.batch)

    start = time.perf_counter()
    grammars.compiler()
    load_s = time.perf_counter() - start
    specs = [StructuredSpec("json_schema", json.dumps(fresh_schema(rng))) for _ in range(args.schemas)]
    new_ms, cached_ms = [], []
    for spec in specs:
        start = time.perf_counter()
        grammars.compile(spec)
        new_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        grammars.compile(spec)
        cached_ms.append((time.perf_counter() - start) * 1e3)

    requests = []
    for i in range(args.batch):
        params = SamplingParams(structured=specs[i % len(specs)])
        req = Request(f"r{i}", [1], params, torch.Generator(), parent_id=f"r{i}")
        req.grammar = grammars.matcher(params.structured)
        requests.append(req)
    logits = torch.randn(args.batch, vocab)
    step_ms = []
    with torch.inference_mode():
        for _ in range(args.steps):
            start = time.perf_counter()
            grammars.mask(logits, requests)
            step_ms.append((time.perf_counter() - start) * 1e3)
    print(json.dumps({
        "model": args.model, "threads": torch.get_num_threads(),
        "load_xgrammar_and_vocab_s": round(load_s, 3),
        "compile_new_schema_ms": {"p50": round(statistics.median(new_ms), 3), "max": round(max(new_ms), 3)},
        "compile_cached_schema_ms": {"p50": round(statistics.median(cached_ms), 4)},
        f"mask_step_batch{args.batch}_ms": {"p50": round(statistics.median(step_ms), 3)},
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
