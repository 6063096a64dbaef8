"""Worker: the models one server process hosts (an engine per model), its memory budget, drain state and metrics.

A worker knows every model of its config and loads them within `memory_budget_gb` (weights + KV, as
engine/footprint.py estimates them): those in `preload` at start, the others when first asked for (a
request, or the controller's POST /internal/load). When a model does not fit, idle models that are not
pinned are unloaded, coldest first: each model's heat is its request count decayed with a half-life of
HEAT_HALF_LIFE_S, so a popular model outlives a rarely called one that happened to be used last (plain
LRU unloads the most popular model whenever a burst of rare ones passes); equal heat goes least recently
used first. A model with requests in flight is never unloaded to make room. Unloading on request drains: new requests for the model get 503 at once, the ones in
flight finish. All chat engines share one StepLoop thread, which picks the model to step next by SLO.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from infercloud.config import WorkerConfig, WorkerModelSpec
from infercloud.contracts import ModelState, UnloadedModel, WorkerState
from infercloud.engine.async_engine import AsyncLLMEngine
from infercloud.observability.tracing import Tracing
from infercloud.engine.engine import LLMEngine
from infercloud.engine.footprint import model_memory_bytes
from infercloud.engine.step_loop import StepLoop
from infercloud.internal_token import shows_token
from infercloud.models.pull import resolve_or_pull
from infercloud.models.random_model import is_random_weights
from infercloud.openai.errors import APIError, internal_token_required, model_not_found
from infercloud.worker.embedding_service import EmbeddingService
from infercloud.worker.llm_service import LLMService, RecentUsage
from infercloud.worker.metrics import ServerMetrics

log = logging.getLogger("infercloud.worker")


def _model_dir(spec: WorkerModelSpec):
    return resolve_or_pull(spec.source)


def _release_memory() -> None:
    """Give freed tensor memory back to the OS (glibc keeps small freed blocks otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class NoRoomError(APIError):
    def __init__(self, model: str, need: int, free: int):
        super().__init__(503, f"Model `{model}` needs {need / 2**20:.0f} MiB, and only {free / 2**20:.0f} MiB can "
                         "be freed on this worker now (the other models are busy or pinned); retry shortly.",
                         type="overloaded_error", code="insufficient_memory")


HEAT_HALF_LIFE_S = 30.0


@dataclass
class Resident:
    """A loaded model: how much and how lately it is used, whether it may be unloaded, what it takes."""

    memory_bytes: int
    pinned: bool
    last_used: float
    load_s: float
    unloading: bool = False
    heat: float = 0.0              # requests, each decayed by half every HEAT_HALF_LIFE_S, as of last_used

    def heat_at(self, now: float) -> float:
        return self.heat * 0.5 ** ((now - self.last_used) / HEAT_HALF_LIFE_S)

    def use(self, now: float) -> None:
        self.heat = self.heat_at(now) + 1.0
        self.last_used = now


@dataclass
class Worker:
    config: WorkerConfig
    chat: dict[str, LLMService] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingService] = field(default_factory=dict)
    draining: bool = False
    in_flight: int = 0             # HTTP requests being served (streams count until their last byte)
    started_at: float = field(default_factory=time.time)
    on_drain: Callable[[], None] | None = None   # set by its server: drain (as SIGTERM) and exit

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.model_states)
        self.recent_usage = RecentUsage()  # by the caller's X-Request-Id, for a gateway whose client left
        self.known = {spec.name: spec for spec in self.config.models}
        self.resident: dict[str, Resident] = {}
        self.step_loop = StepLoop(self.config.multiplex)
        self.tracing = Tracing.of(self.config.tracing, "infercloud-worker")
        budget = self.config.memory_budget_gb
        self.memory_budget_bytes = None if budget is None else int(budget * 2**30)
        self.num_loads = 0
        self.num_evictions = 0
        self._footprints: dict[str, int] = {}
        self._random: dict[str, bool] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def create(cls, config: WorkerConfig) -> "Worker":
        worker = cls(config)
        names = [s.name for s in config.models] if config.preload is None else list(config.preload)
        for name in names:
            budget = worker.memory_budget_bytes
            if budget is not None and worker.memory_used_bytes + worker.footprint(name) > budget:
                log.warning("%s does not fit the memory budget beside the models loaded before it: it will "
                            "load on its first request", name)
                continue
            worker._load_now(name, pinned=False)
        for name in worker.known:   # what each model would take, for the controller's placement (state())
            try:
                worker.footprint(name)
            except (LookupError, OSError, ValueError) as exc:
                log.warning("cannot size %s (%s): it will not be placed here until it is", name, exc)
        return worker

    # -- loading and unloading ---------------------------------------------------------------------
    def footprint(self, name: str) -> int:
        if name not in self._footprints:
            spec = self.known[name]
            self._footprints[name] = model_memory_bytes(_model_dir(spec), spec.kind, spec.engine)
        return self._footprints[name]

    @property
    def memory_used_bytes(self) -> int:
        return sum(r.memory_bytes for r in self.resident.values())

    def _quiet(self, name: str) -> bool:
        """No request in flight for the model, in HTTP or in its engine."""
        svc = self.chat.get(name) or self.embeddings.get(name)
        return svc.in_flight == 0 and not (name in self.chat and svc.engine.engine.has_unfinished_requests())

    def _idle(self, name: str) -> bool:
        return self._quiet(name) and not self.resident[name].unloading

    def evict_for(self, name: str) -> list[str]:
        """Unload least recently used idle, unpinned models until `name` fits; the names unloaded.

        Raises NoRoomError (nothing unloaded) when even unloading every such model would not make room.
        """
        if self.memory_budget_bytes is None:
            return []
        need = self.footprint(name)
        free = self.memory_budget_bytes - self.memory_used_bytes
        now = time.monotonic()
        victims = sorted((r.heat_at(now), r.last_used, n) for n, r in self.resident.items()
                         if not r.pinned and self._idle(n))
        chosen = []
        for _, _, victim in victims:
            if free >= need:
                break
            chosen.append(victim)
            free += self.resident[victim].memory_bytes
        if free < need:
            raise NoRoomError(name, need, free)
        for victim in chosen:
            log.info("unloading %s (the coldest idle model) to make room for %s", victim, name)
            self._unload_now(victim)
            self.num_evictions += 1
        return chosen

    def _load_now(self, name: str, pinned: bool) -> None:
        """Build the model's engine (blocking) and make it servable."""
        spec = self.known[name]
        model_dir = _model_dir(spec)
        start = time.monotonic()
        if spec.kind == "chat":
            engine = AsyncLLMEngine(lambda d=model_dir, c=spec.engine: LLMEngine(d, c), loop=self.step_loop,
                                    slo=spec.slo)
            self.chat[name] = LLMService(name, engine, self.metrics, self.config.max_waiting,
                                         recent_usage=self.recent_usage, tracing=self.tracing)
        else:
            dtype = "float32" if spec.engine.dtype == "auto" else spec.engine.dtype  # parity with HF by default
            self.embeddings[name] = EmbeddingService(name, model_dir, self.metrics, spec.max_batch_size,
                                                     spec.max_wait_ms, spec.engine.device, dtype,
                                                     spec.max_request_tokens)
        load_s = time.monotonic() - start
        # a load counts as one use: it was asked for because a request wants the model
        self.resident[name] = Resident(self.footprint(name), pinned, time.monotonic(), load_s, heat=1.0)
        self.num_loads += 1
        log.info("loaded %s in %.2f s", name, load_s)

    def _unload_now(self, name: str) -> None:
        self.resident.pop(name, None)
        svc = self.chat.pop(name, None)
        if svc is not None:
            svc.engine.shutdown()
        else:
            self.embeddings.pop(name).shutdown()
        del svc
        _release_memory()

    async def ensure_loaded(self, name: str, pinned: bool | None = None) -> list[str]:
        """Load `name` if it is not (unloading others to make room); the models unloaded for it.

        Concurrent calls for one model share one load. `pinned` (when given) sets whether the model may
        be unloaded to make room for others.
        """
        if name not in self.known:
            raise model_not_found(name)
        if name in self.resident and not self.resident[name].unloading:
            if pinned is not None:
                self.resident[name].pinned = pinned
            return []
        if name in self._loading:
            await asyncio.shield(self._loading[name])
            return []
        future = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        try:
            async with self._lock:
                evicted = self.evict_for(name)
                await asyncio.to_thread(self._load_now, name, bool(pinned))
            future.set_result(None)
            return evicted
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters raise it themselves
            raise
        finally:
            del self._loading[name]

    async def unload(self, name: str, drain_timeout_s: float | None = None) -> bool:
        """Stop taking requests for `name`, let those in flight finish, unload it. False if it was not loaded."""
        resident = self.resident.get(name)
        if resident is None:
            return False
        resident.unloading = True
        deadline = time.monotonic() + (self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s)
        while not self._quiet(name) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.resident.get(name) is resident:
            self._unload_now(name)
        return True

    async def service(self, name: str) -> LLMService | EmbeddingService:
        """The loaded service of a model this worker knows, loading it first if needed."""
        resident = self.resident.get(name)
        if resident is not None and resident.unloading:
            raise APIError(503, f"The model `{name}` is being unloaded from this worker; retry.",
                           type="overloaded_error", code="model_unloading")
        if resident is None and not self.config.load_on_request:
            raise APIError(503, f"The model `{name}` is not loaded on this worker.", type="overloaded_error",
                           code="model_not_loaded")
        if resident is None:
            await self.ensure_loaded(name)
            resident = self.resident[name]
        resident.use(time.monotonic())
        return self.chat.get(name) or self.embeddings[name]

    def is_random(self, name: str) -> bool:
        """Whether the model's folder holds random weights (`infercloud models create-random`)."""
        if name not in self._random:
            try:
                self._random[name] = is_random_weights(_model_dir(self.known[name]))
            except (LookupError, OSError):
                self._random[name] = False
        return self._random[name]

    async def authorize_internal(self, path: str, authorization: str | None) -> APIError | None:
        """Internal routes (and, on a cloud's worker, every route but /health) need the internal token."""
        token = self.config.internal_token
        return None if token is not None and shows_token(authorization, token) else internal_token_required()

    def kind(self, name: str) -> str | None:
        spec = self.known.get(name)
        return None if spec is None else spec.kind

    # -- state ----------------------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self.chat) + list(self.embeddings)

    def model_states(self) -> dict[str, ModelState]:
        """Each loaded model's engine (or batcher) state, with its residency here."""
        states = {name: svc.state() for name, svc in self.chat.items()}
        states.update({name: svc.state() for name, svc in self.embeddings.items()})
        now = time.monotonic()
        for name, state in states.items():
            r = self.resident.get(name)
            if r is not None:
                states[name] = state.model_copy(update=dict(
                    memory_bytes=r.memory_bytes, pinned=r.pinned, idle_s=round(now - r.last_used, 3),
                    heat=round(r.heat_at(now), 4), load_s=round(r.load_s, 4), unloading=r.unloading))
        return states

    def health(self, stuck_after_s: float = 60.0) -> tuple[bool, dict]:
        """Healthy when every engine loop is alive and has gone round recently."""
        now = time.monotonic()
        models, healthy = {}, True
        for name, svc in self.chat.items():
            alive = svc.engine.is_alive and now - svc.engine.last_heartbeat < stuck_after_s
            healthy &= alive
            state = svc.engine.engine.stats()
            models[name] = {"alive": alive, "running": state.num_running, "waiting": state.num_waiting,
                            "idle": state.num_running + state.num_waiting == 0}
        for name, svc in self.embeddings.items():
            models[name] = {"alive": True, "in_flight": svc.in_flight, "idle": svc.in_flight == 0}
        busy = sum(1 for m in models.values() if not m["idle"])
        return healthy, {"status": "ok" if healthy else "unhealthy", "draining": self.draining,
                         "busy_models": busy, "idle_models": len(models) - busy, "models": models}

    def state(self) -> WorkerState:
        """GET /internal/state: what the controller and router need to know about this worker."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        unloaded = {name: UnloadedModel(kind=spec.kind, memory_bytes=self._footprints.get(name))
                    for name, spec in self.known.items() if name not in self.resident}
        return WorkerState(
            worker_id=self.config.worker_id, draining=self.draining, in_flight=self.in_flight, device=device,
            num_threads=torch.get_num_threads(), rss_bytes=_rss_bytes(), memory_budget_bytes=self.memory_budget_bytes,
            memory_used_bytes=self.memory_used_bytes, num_loads=self.num_loads, num_evictions=self.num_evictions,
            multiplex=self.config.multiplex, uptime_s=time.time() - self.started_at, time=time.time(),
            models=self.model_states(), unloaded=unloaded)

    def shutdown(self) -> None:
        for svc in self.chat.values():
            svc.engine.shutdown()
        for svc in self.embeddings.values():
            svc.shutdown()
        self.step_loop.shutdown()
        if self.tracing is not None:
            self.tracing.shutdown()   # sends the spans still batched


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None
