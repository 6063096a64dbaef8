"""A worker hosting more models than its memory holds: lazy loads, LRU eviction of idle models only,
pinned models kept, a clear 503 when nothing can be freed, unload after drain, one shared step loop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from infercloud.config import WorkerConfig, WorkerModelSpec
from infercloud.engine.config import EngineConfig
from infercloud.engine.footprint import model_memory_bytes
from infercloud.engine.sampling import SamplingParams
from infercloud.openai.errors import APIError
from infercloud.worker.worker import NoRoomError, Worker

ENGINE = EngineConfig(num_kv_blocks=64, max_num_seqs=8)


@pytest.fixture
def worker(random_model_dirs):
    """Six random models; memory for two and a half of them."""
    models = tuple(WorkerModelSpec(f"rand-{i}", path=str(d), engine=ENGINE) for i, d in enumerate(random_model_dirs))
    footprint = model_memory_bytes(random_model_dirs[0], "chat", ENGINE)
    worker = Worker.create(WorkerConfig(models=models, preload=(), memory_budget_gb=2.5 * footprint / 2**30))
    yield worker
    worker.shutdown()


@contextlib.asynccontextmanager
async def busy(worker: Worker, name: str):
    """A request in flight on the model's engine for the duration of the block."""
    stream = (await worker.service(name)).engine.generate("Hello", SamplingParams(max_tokens=1000, ignore_eos=True))
    await stream.__anext__()
    try:
        yield
    finally:
        await stream.aclose()


def test_models_load_on_first_use_and_the_coldest_idle_one_makes_room(worker):
    async def scenario():
        assert worker.resident == {} and worker.memory_used_bytes == 0
        await worker.service("rand-0")
        await worker.service("rand-1")
        await worker.service("rand-0")                     # rand-1: used once, and least recently
        assert await worker.ensure_loaded("rand-2") == ["rand-1"]
        assert set(worker.resident) == {"rand-0", "rand-2"}
        assert worker.memory_used_bytes <= worker.memory_budget_bytes
        assert "rand-1" in worker.state().unloaded and worker.num_evictions == 1
        out = await (await worker.service("rand-1")).engine.generate("Hi", SamplingParams(max_tokens=3)).__anext__()
        assert out.request_id                              # it comes back on demand, in place of rand-2:
        assert set(worker.resident) == {"rand-0", "rand-1"}  # loaded once, never used, colder than rand-0

    asyncio.run(scenario())


def test_a_model_with_requests_in_flight_is_never_unloaded(worker):
    async def scenario():
        await worker.service("rand-0")
        await worker.service("rand-1")
        async with busy(worker, "rand-0"):
            await worker.service("rand-1")                 # rand-0 is older but busy
            assert await worker.ensure_loaded("rand-2") == ["rand-1"]
            async with busy(worker, "rand-2"):
                with pytest.raises(NoRoomError) as info:   # both loaded models busy: nothing can make room
                    await worker.ensure_loaded("rand-3")
                assert info.value.status == 503 and info.value.code == "insufficient_memory"
                assert set(worker.resident) == {"rand-0", "rand-2"}

    asyncio.run(scenario())


def test_pinned_models_stay(worker):
    async def scenario():
        await worker.ensure_loaded("rand-0", pinned=True)
        await worker.service("rand-1")
        assert await worker.ensure_loaded("rand-2") == ["rand-1"]
        assert worker.model_states()["rand-0"].pinned is True

    asyncio.run(scenario())


def test_unload_drains_then_frees_and_new_requests_get_503_meanwhile(worker):
    async def scenario():
        await worker.service("rand-0")
        used = worker.memory_used_bytes
        async with busy(worker, "rand-0"):
            unloading = asyncio.create_task(worker.unload("rand-0", drain_timeout_s=30))
            await asyncio.sleep(0.1)
            assert not unloading.done() and "rand-0" in worker.resident
            with pytest.raises(APIError) as info:
                await worker.service("rand-0")
            assert info.value.status == 503 and info.value.code == "model_unloading"
        assert await unloading is True
        assert "rand-0" not in worker.resident and worker.memory_used_bytes == used - worker.footprint("rand-0")

    asyncio.run(scenario())


def test_concurrent_first_requests_share_one_load_and_one_step_loop(worker):
    async def scenario():
        services = await asyncio.gather(*(worker.service("rand-3") for _ in range(5)), worker.service("rand-4"))
        assert len({id(s) for s in services[:5]}) == 1 and worker.num_loads == 2
        assert services[0].engine.loop is services[5].engine.loop is worker.step_loop

    asyncio.run(scenario())


def test_preload_loads_what_fits_in_order_and_leaves_the_rest_for_first_use(random_model_dirs):
    models = tuple(WorkerModelSpec(f"rand-{i}", path=str(d), engine=ENGINE) for i, d in enumerate(random_model_dirs))
    footprint = model_memory_bytes(random_model_dirs[0], "chat", ENGINE)
    worker = Worker.create(WorkerConfig(models=models, memory_budget_gb=2.5 * footprint / 2**30))
    try:
        assert list(worker.resident) == ["rand-0", "rand-1"] and worker.num_evictions == 0
        assert sorted(worker.state().unloaded) == ["rand-2", "rand-3", "rand-4", "rand-5"]
    finally:
        worker.shutdown()


def test_a_pool_worker_loads_only_when_told(random_model_dirs):
    models = tuple(WorkerModelSpec(f"rand-{i}", path=str(d), engine=ENGINE)
                   for i, d in enumerate(random_model_dirs[:2]))
    worker = Worker.create(WorkerConfig(models=models, preload=(), load_on_request=False))

    async def scenario():
        with pytest.raises(APIError) as info:        # the gateway retries elsewhere or holds it
            await worker.service("rand-0")
        assert info.value.status == 503 and info.value.code == "model_not_loaded"
        await worker.ensure_loaded("rand-0")         # POST /internal/load
        assert (await worker.service("rand-0")).name == "rand-0"

    try:
        asyncio.run(scenario())
    finally:
        worker.shutdown()


def test_a_popular_model_outlives_a_rare_one_used_more_lately(worker):
    async def scenario():
        for _ in range(5):
            await worker.service("rand-0")              # popular
        await worker.service("rand-1")                  # used once, but last
        assert await worker.ensure_loaded("rand-2") == ["rand-1"]
        states = worker.model_states()
        assert states["rand-0"].heat > 4 > states["rand-2"].heat

    asyncio.run(scenario())
