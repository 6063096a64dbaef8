"""The cluster-backend contract: start a worker from a spec, stop it (draining), list the nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from infercloud.config import WorkerConfig


@dataclass(frozen=True)
class WorkerSpec:
    worker_id: str
    config: WorkerConfig          # the worker's own config; the backend sets host, port and worker_id
    threads: int                  # torch/OpenMP threads the worker may use (and CPUs it reserves)
    num_gpus: int = 0             # GPUs it needs (a worker whose models run on cuda)
    memory_bytes: int | None = None   # memory it reserves where the backend accounts for it
    region: str | None = None     # a node of this region (label `region`); None: any node


@dataclass(frozen=True)
class NodeView:
    node_id: str
    num_cpus: int
    memory_bytes: int | None
    device_kind: str              # "cpu" or "cuda"
    labels: dict[str, str] = field(default_factory=dict)  # region, zone, ...
    address: str = "127.0.0.1"    # the IP its workers listen on
    num_gpus: int = 0

    @property
    def region(self) -> str | None:
        return self.labels.get("region")


class WorkerHandle(Protocol):
    worker_id: str
    url: str
    region: str | None            # the region of the node it runs on
    node_id: str

    def is_alive(self) -> bool: ...


class ClusterBackend(Protocol):
    def start_worker(self, spec: WorkerSpec) -> WorkerHandle:
        """Launch the worker and return at once; it is ready when its /health answers 200."""

    def stop_worker(self, handle: WorkerHandle, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Stop it: SIGTERM-style drain (in-flight requests finish) or at once; blocks until it is gone."""

    def nodes(self) -> list[NodeView]: ...
