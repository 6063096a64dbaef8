"""What a dtype or a quantization costs in quality: perplexity on a fixed text set, and greedy agreement with fp32.

For each setting (fp32, bf16, bf16 + int8 weights) the engine loads the model as it would serve it, then
  - perplexity: exp of the mean next-token negative log-likelihood over every token of data/quality.txt
    (six paragraphs), each paragraph scored in one pass (ModelRunner.prompt_logits);
  - greedy agreement: the parity prompts (also used by the HF parity tests) generated greedily, 24 tokens
    each, compared with fp32's tokens: the share of prompts identical, and the mean share of each
    reply's tokens before its first difference.

    python -m infercloud.bench.quality [--model smollm2-135m-instruct] [--out quality.json]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.engine.runner import ModelRunner
from infercloud.engine.sampling import SamplingParams

TEXTS = Path(__file__).parent / "data" / "quality.txt"
MAX_NEW = 24
LONG_TEXT = " ".join(
    f"Section {i}: the paged KV cache stores keys and values in fixed-size blocks, so memory is "
    f"allocated on demand and shared prefixes are reused across requests." for i in range(20))
SETTINGS = {"float32": EngineConfig(dtype="float32"), "bfloat16": EngineConfig(dtype="bfloat16"),
            "bfloat16+int8": EngineConfig(dtype="bfloat16", quantization="int8")}


def parity_prompts(tokenizer) -> list[list[int]]:
    """Chats and plain texts from 2 to 400+ tokens: the prompts of the HF parity tests and of greedy agreement."""
    chats = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "You are a terse assistant."},
         {"role": "user", "content": "List three prime numbers."}],
        [{"role": "user", "content": "Write a haiku about the sea."},
         {"role": "assistant", "content": "Waves fold into foam"},
         {"role": "user", "content": "Another one, about mountains."}],
        [{"role": "user", "content": "Summarise this:\n" + LONG_TEXT}],
    ]
    plain = ["Hello", "The quick brown fox", "def fibonacci(n):\n    ", LONG_TEXT[:1500] + "\nIn short,"]
    return [tokenizer.encode_chat(c) for c in chats] + [tokenizer.encode(p) for p in plain]


def perplexity(engine: LLMEngine, texts: list[str]) -> float:
    longest = max(len(engine.tokenizer.encode(t)) for t in texts)
    runner = ModelRunner(engine.model, -(-longest // engine.config.block_size), engine.config.block_size,
                         engine.device, engine.dtype, engine.config.attention)
    nll, count = 0.0, 0
    for text in texts:
        ids = engine.tokenizer.encode(text)
        logits = runner.prompt_logits(ids)[:-1]
        nll += F.cross_entropy(logits, torch.tensor(ids[1:], device=logits.device), reduction="sum").item()
        count += len(ids) - 1
    return math.exp(nll / count)


def greedy_tokens(engine: LLMEngine) -> list[list[int]]:
    params = SamplingParams(max_tokens=MAX_NEW, temperature=0.0)
    return [o.outputs[0].token_ids for o in engine.generate(parity_prompts(engine.tokenizer), params)]


@dataclass
class Quality:
    setting: str
    perplexity: float
    perplexity_vs_fp32: float      # ratio to fp32's perplexity
    identical_replies: float       # share of parity prompts whose greedy reply equals fp32's
    agreeing_prefix: float         # mean share of a reply's tokens before its first difference from fp32


def agreement(reference: list[list[int]], got: list[list[int]]) -> tuple[float, float]:
    same = sum(a == b for a, b in zip(reference, got)) / len(reference)
    prefixes = []
    for a, b in zip(reference, got):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefixes.append(n / max(len(a), 1))
    return same, sum(prefixes) / len(prefixes)


def measure(model_dir: Path, settings: dict[str, EngineConfig] = SETTINGS) -> list[Quality]:
    texts = [t.strip() for t in TEXTS.read_text().split("\n\n") if t.strip()]
    results, reference, base = [], None, None
    for name, config in settings.items():
        engine = LLMEngine(model_dir, config)
        ppl, tokens = perplexity(engine, texts), greedy_tokens(engine)
        reference, base = reference or tokens, base or ppl
        same, prefix = agreement(reference, tokens)
        results.append(Quality(name, round(ppl, 4), round(ppl / base, 4), round(same, 3), round(prefix, 3)))
    return results


def main(argv: list[str] | None = None) -> int:
    from infercloud.models.catalog import model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = measure(model_path(args.model))
    print(f"{'setting':<16}{'perplexity':>12}{'vs fp32':>10}{'identical':>11}{'prefix':>9}")
    for q in results:
        print(f"{q.setting:<16}{q.perplexity:>12.3f}{q.perplexity_vs_fp32:>10.4f}{q.identical_replies:>11.3f}"
              f"{q.agreeing_prefix:>9.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps([asdict(q) for q in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
