"""AsyncLLMEngine: streams per request off the event loop; leaving a stream aborts it and frees its blocks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from infercloud.engine.async_engine import AsyncLLMEngine
from infercloud.engine.engine import ContextLengthError
from infercloud.engine.sampling import SamplingParams


@pytest.fixture
def start_async(smollm2_engine):
    """Starts the step thread on demand: while it runs, it owns the LLMEngine (nothing else may call it)."""
    started = []

    def start() -> AsyncLLMEngine:
        started.append(AsyncLLMEngine(smollm2_engine))
        return started[-1]

    yield start
    for engine in started:
        engine.shutdown()


@pytest.fixture
def async_engine(start_async):
    return start_async()


def test_concurrent_streams_match_offline(start_async, smollm2_engine):
    prompts = ["The sky is", "Python is a", "My favourite food is"]
    params = SamplingParams(max_tokens=12, temperature=0.0)
    expected = [o.outputs[0].text for o in smollm2_engine.generate(prompts, params)]
    async_engine = start_async()
    step_threads = set()

    async def one(prompt):
        text = ""
        async for out in async_engine.generate(prompt, params):
            step_threads.add(threading.current_thread().name)
            text += out.outputs[0].delta_text
        return text

    async def main():
        return await asyncio.gather(*(one(p) for p in prompts))

    assert asyncio.run(main()) == expected
    assert step_threads == {"MainThread"}  # outputs arrive on the loop; the steps ran on the engine thread


def test_leaving_a_stream_aborts_and_frees_blocks(async_engine, smollm2_engine):
    async def main():
        gen = async_engine.generate("Count to one thousand: 1, 2, 3,", SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True))
        got = 0
        async for _ in gen:
            got += 1
            if got == 3:
                break
        await gen.aclose()
        for _ in range(200):
            if async_engine.num_active == 0 and not smollm2_engine.has_unfinished_requests():
                break
            await asyncio.sleep(0.01)
        return got

    assert asyncio.run(main()) == 3
    assert smollm2_engine.kv.num_used_blocks == 0


def test_cancelled_task_aborts(async_engine, smollm2_engine):
    started = asyncio.Event()

    async def consume():
        async for _ in async_engine.generate("Tell me everything about the ocean.",
                                             SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)):
            started.set()

    async def main():
        task = asyncio.create_task(consume())
        await started.wait()
        assert smollm2_engine.kv.num_used_blocks > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if not smollm2_engine.has_unfinished_requests():
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert smollm2_engine.kv.num_used_blocks == 0


def test_validation_error_reaches_the_caller(async_engine):
    async def main():
        async for _ in async_engine.generate([1] * 9000, SamplingParams(max_tokens=10)):
            pass

    with pytest.raises(ContextLengthError):
        asyncio.run(main())
    assert async_engine.is_alive


def test_factory_builds_the_engine_on_the_step_thread(smollm2_dir):
    from infercloud.engine.config import EngineConfig
    from infercloud.engine.engine import LLMEngine

    built_on = []

    def factory():
        built_on.append(threading.current_thread().name)
        return LLMEngine(smollm2_dir, EngineConfig(kv_cache_memory_gb=0.05))

    engine = AsyncLLMEngine(factory)
    try:
        assert built_on == ["engine-step-loop"] and engine.is_alive

        async def main():
            return [o async for o in engine.generate("Hi", SamplingParams(max_tokens=3, temperature=0.0))]

        assert asyncio.run(main())[-1].finished
    finally:
        engine.shutdown()


def test_factory_errors_reach_the_caller(tmp_path):
    from infercloud.engine.engine import LLMEngine

    with pytest.raises(FileNotFoundError):
        AsyncLLMEngine(lambda: LLMEngine(tmp_path))
