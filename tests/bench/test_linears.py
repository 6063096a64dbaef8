"""bench/linears.py: every linear kernel this machine runs, on the same inputs."""

from __future__ import annotations

import torch

from infercloud.bench.linears import kernels_here, measure
from infercloud.engine.quant import aten_int8_runs, cpu_has_vnni


def test_each_kernel_is_timed_with_its_error_against_fp32():
    cpu = torch.device("cpu")
    expected = ({"bf16"} | ({"int8-aten"} if aten_int8_runs(cpu, torch.bfloat16) else set())
                | ({"int8-vnni"} if cpu_has_vnni(cpu) else set()))
    assert set(kernels_here()) == expected
    one_row = {r["kernel"]: r for r in measure((64, 128), rows=1, repeats=2)}
    assert set(one_row) == expected
    assert all(one_row["bf16"]["rel_error"] < 0.005 < r["rel_error"] < 0.03 for k, r in one_row.items() if k != "bf16")
    assert all(r["us"] > 0 and r["gops"] > 0 for r in one_row.values())
    many = {r["kernel"] for r in measure((64, 128), rows=40, repeats=2)}
    assert many == expected - {"int8-aten"}   # aten's int8 kernel takes up to 16 rows
