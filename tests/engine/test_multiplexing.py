"""Two real models sharing one step loop: stepping by SLO slack keeps both TPOT targets where
first-come-first-served stepping (round robin) makes the tight one miss.

Model A (loose TPOT target) runs a large batch, so its steps are slow; model B (tight target) serves a
few streams. Targets are set from step times measured first on this machine, so the test holds on a
fast or a slow box: B's target is its own step time plus half of A's, which round robin (every B token
waits for an A step) cannot meet; A's target is several of its steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import pytest

from infercloud.engine.async_engine import AsyncLLMEngine
from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.engine.sampling import SamplingParams
from infercloud.engine.step_loop import SLO, StepLoop

A_STREAMS, B_STREAMS, B_TOKENS = 24, 3, 40


async def tpot(engine: AsyncLLMEngine, prompt: str, max_tokens: int, stop: asyncio.Event | None = None) -> float:
    """(last token time - first token time) / (tokens - 1) of one stream; ended early when `stop` is set."""
    times = []
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    async with contextlib.aclosing(engine.generate(prompt, params)) as stream:
        async for _ in stream:
            times.append(time.perf_counter())
            if stop is not None and stop.is_set():
                break
    return (times[-1] - times[0]) / (len(times) - 1)


async def run(a: AsyncLLMEngine, b: AsyncLLMEngine, with_b: bool = True) -> tuple[float, float | None]:
    """A's many streams, then (once they decode) B's streams; the p90 TPOT of each model's streams."""
    stop = asyncio.Event()
    a_tasks = [asyncio.create_task(tpot(a, f"Story number {i}: once upon a time", 1000, stop))
               for i in range(A_STREAMS)]
    while a.engine.stats().num_running < A_STREAMS or a.engine.stats().num_generated_tokens < 2 * A_STREAMS:
        await asyncio.sleep(0.01)
    if not with_b:
        await asyncio.sleep(1.5)
        b_tpots = None
    else:
        b_tpots = await asyncio.gather(*(tpot(b, f"Question {i}: why is the sky blue?", B_TOKENS)
                                         for i in range(B_STREAMS)))
    stop.set()
    a_tpots = await asyncio.gather(*a_tasks)
    return p90(a_tpots), None if b_tpots is None else p90(b_tpots)


async def alone(b: AsyncLLMEngine) -> list[float]:
    return await asyncio.gather(*(tpot(b, f"Question {i}: why?", B_TOKENS) for i in range(B_STREAMS)))


def p90(values) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.9 * len(values)))]


@pytest.fixture(scope="module")
def two_models(smollm2_dir):
    loop = StepLoop("slo")
    config = EngineConfig(kv_cache_memory_gb=0.25, max_num_seqs=64)
    a = AsyncLLMEngine(lambda: LLMEngine(smollm2_dir, config), loop=loop)
    b = AsyncLLMEngine(lambda: LLMEngine(smollm2_dir, config), loop=loop)
    yield loop, a, b
    a.shutdown()
    b.shutdown()
    loop.shutdown()


def test_slo_stepping_keeps_both_tpot_targets_where_fcfs_misses_the_tight_one(two_models):
    loop, a, b = two_models
    t_a, _ = asyncio.run(run(a, b, with_b=False))                       # A's step time with its full batch
    t_b = statistics.median(asyncio.run(alone(b)))
    a.slo = SLO(tpot_s=6 * (t_a + t_b))
    b.slo = SLO(tpot_s=t_b + 0.5 * t_a)

    loop.policy = "fcfs"
    fcfs_a, fcfs_b = asyncio.run(run(a, b))
    loop.policy = "slo"
    slo_a, slo_b = asyncio.run(run(a, b))

    summary = (f"step A {t_a * 1e3:.0f} ms, B {t_b * 1e3:.0f} ms; targets A {a.slo.tpot_s * 1e3:.0f} ms, "
               f"B {b.slo.tpot_s * 1e3:.0f} ms; TPOT p90 fcfs A {fcfs_a * 1e3:.0f} B {fcfs_b * 1e3:.0f}, "
               f"slo A {slo_a * 1e3:.0f} B {slo_b * 1e3:.0f}")
    assert fcfs_b > b.slo.tpot_s, summary               # round robin: every B token waits for an A step
    assert slo_b <= b.slo.tpot_s, summary                # by slack: B steps while A has time to spare
    assert slo_a <= a.slo.tpot_s, summary                # ... and A still keeps its own target
    print(summary)
    for _ in range(500):                                 # the aborts of A's streams are applied between steps
        if a.engine.kv.num_used_blocks == 0 and not a.engine.has_unfinished_requests():
            break
        time.sleep(0.01)
    assert a.engine.kv.num_used_blocks == 0 and b.engine.kv.num_used_blocks == 0
