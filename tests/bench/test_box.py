"""The box a benchmark ran on: CPU model and kernel flags from /proc/cpuinfo, and measured ceilings."""

from __future__ import annotations

from infercloud.bench.box import FLAGS, ceilings, cpu_description
from infercloud.bench.report import machine_info

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni sha_ni
"""


def test_the_cpu_model_and_only_the_kernel_flags_are_recorded():
    described = cpu_description(CPUINFO)
    assert described["cpu_model"] == "AMD EPYC 9R14 96-Core Processor"
    assert described["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16", "avx512_vnni"]   # FLAGS order, no others
    assert set(cpu_description("")["cpu_flags"]) <= set(FLAGS)
    assert {"cpu_model", "cpu_flags", "cpus", "torch_threads"} <= set(machine_info())   # in every bench JSON


def test_ceilings_are_measured_and_positive():
    measured = ceilings(seconds=0.01)
    assert set(measured) == {"gemm_fp32_decode_gflops", "gemm_bf16_decode_gflops", "gemm_fp32_large_gflops",
                             "gemm_bf16_large_gflops", "gemm_int8_weight_decode_gflops",
                             "gemm_int8_vnni_decode_gflops", "gemm_int8_vnni_large_gflops", "memory_gbs"}
    assert all(v is None or v > 0 for v in measured.values())
    assert measured["gemm_fp32_decode_gflops"] > 0 and measured["memory_gbs"] > 0
