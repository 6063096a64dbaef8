"""Worker: the models one server process hosts (an engine per model), its drain state and its metrics."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch

from infercloud.config import ModelSpec, ServerConfig
from infercloud.engine.async_engine import AsyncLLMEngine
from infercloud.engine.engine import LLMEngine
from infercloud.models.catalog import resolve_model
from infercloud.models.pull import pull
from infercloud.worker.embedding_service import EmbeddingService
from infercloud.worker.llm_service import LLMService, RecentUsage
from infercloud.worker.metrics import ServerMetrics


def _model_dir(spec: ModelSpec):
    """A folder path as is; a catalog name pulled first if needed (idempotent)."""
    try:
        return resolve_model(spec.source)
    except LookupError:
        return pull(spec.source, progress=True)


@dataclass
class Worker:
    config: ServerConfig
    chat: dict[str, LLMService] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingService] = field(default_factory=dict)
    draining: bool = False
    in_flight: int = 0             # HTTP requests being served (streams count until their last byte)
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.model_states)
        self.recent_usage = RecentUsage()  # by the caller's X-Request-Id, for a gateway whose client left

    @classmethod
    def create(cls, config: ServerConfig) -> "Worker":
        worker = cls(config)
        for spec in config.models:
            model_dir = _model_dir(spec)
            if spec.kind == "chat":
                engine = AsyncLLMEngine(lambda d=model_dir, c=spec.engine: LLMEngine(d, c))  # built on its thread
                worker.chat[spec.name] = LLMService(spec.name, engine, worker.metrics, config.max_waiting,
                                                      recent_usage=worker.recent_usage)
            else:
                dtype = "float32" if spec.engine.dtype == "auto" else spec.engine.dtype  # parity with HF by default
                worker.embeddings[spec.name] = EmbeddingService(spec.name, model_dir, worker.metrics,
                                                                spec.max_batch_size, spec.max_wait_ms,
                                                                spec.engine.device, dtype)
        return worker

    @property
    def model_names(self) -> list[str]:
        return list(self.chat) + list(self.embeddings)

    def model_states(self) -> dict[str, dict]:
        states = {name: svc.state() for name, svc in self.chat.items()}
        states.update({name: svc.state() for name, svc in self.embeddings.items()})
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

    def state(self) -> dict:
        """GET /internal/state: what the controller and router need to know about this worker."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return {"worker_id": self.config.worker_id, "draining": self.draining, "in_flight": self.in_flight,
                "device": device, "num_threads": torch.get_num_threads(), "rss_bytes": _rss_bytes(),
                "uptime_s": time.time() - self.started_at, "time": time.time(), "models": self.model_states()}

    def shutdown(self) -> None:
        for svc in self.chat.values():
            svc.engine.shutdown()
        for svc in self.embeddings.values():
            svc.shutdown()


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None
