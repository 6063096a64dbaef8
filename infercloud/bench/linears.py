"""Linear-layer kernels side by side: int8 (VNNI, aten's weight-only) against the packed bf16 GEMM.

For each weight shape (N output channels x K inputs: SmolLM2-135M's fused q/k/v, gate/up, down and vocabulary
projections by default) and each row count M: microseconds per call (median of repeats), the rate (GOPS,
2 M N K per call), the int8 weight bytes read per second, and the relative error against the fp32 product of
the unquantized weight. Same process, same inputs, one after the other.

    python -m infercloud.bench.linears --rows 1,16,64,512
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from infercloud.engine.packed import PackedLinear
from infercloud.engine.quant import Int8Linear, aten_int8_runs, int8_kernel

SHAPES = ((960, 576), (3072, 576), (576, 1536), (49152, 576))


def kernels_here() -> dict[str, str | None]:
    """name -> Int8Linear kernel (None: the packed bf16 GEMM) of every path this machine runs."""
    cpu = torch.device("cpu")
    paths: dict[str, str | None] = {"bf16": None}
    if aten_int8_runs(cpu, torch.bfloat16):
        paths["int8-aten"] = "aten"
    if int8_kernel(cpu, torch.bfloat16) == "vnni":
        paths["int8-vnni"] = "vnni"
    return paths


def time_call(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(shape: tuple[int, int], rows: int, repeats: int = 9, seed: int = 0) -> list[dict]:
    n, k = shape
    torch.manual_seed(seed)
    weight = torch.randn(n, k).to(torch.bfloat16)
    x = torch.randn(rows, k).to(torch.bfloat16)
    exact = x.float() @ weight.float().T
    results = []
    for name, kernel in kernels_here().items():
        layer = PackedLinear(weight, None) if kernel is None else Int8Linear(weight, None, kernel)
        if kernel == "aten" and rows > 16:
            continue   # aten's kernel runs up to 16 rows (quant.KERNEL_MAX_ROWS); above, it is the dequantized GEMM
        # one bf16 row runs as two, as the engine does (arch/llama.py linear())
        fn = (lambda t, f=layer: f(torch.cat((t, t)))[:1]) if kernel is None and rows == 1 else layer
        seconds = time_call(fn, x, repeats)
        error = float((fn(x).float() - exact).norm() / exact.norm())
        results.append({"kernel": name, "n": n, "k": k, "rows": rows, "us": round(seconds * 1e6, 1),
                        "gops": round(2 * rows * n * k / seconds / 1e9, 1),
                        "weight_gbs": round(n * k * (1 if kernel else 2) / seconds / 1e9, 1),
                        "rel_error": round(error, 4)})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,16,64,512", help="row counts M, comma-separated")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    results = []
    for shape in SHAPES:
        for rows in (int(m) for m in args.rows.split(",")):
            for r in measure(shape, rows, args.repeats):
                print(f"{r['n']:>6} x {r['k']:<5} M={r['rows']:<4} {r['kernel']:<10} {r['us']:>9.1f} us "
                      f"{r['gops']:>7.1f} GOPS {r['weight_gbs']:>6.1f} GB/s  error {r['rel_error']:.4f}", flush=True)
                results.append(r)
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
