"""Typed messages between processes: what a worker reports, what gateways and the controller exchange.

Workers produce `WorkerState` (GET /internal/state), `LoadReply` and `UnloadReply` (POST /internal/load and
/internal/unload) and `UsageRecord` (GET /internal/usage/{key}); the controller and gateway links read
them. A gateway without a controller sends a `SyncReport` to the one with it (POST /internal/sync) and gets
a `SyncReply`: every replica as a `ReplicaRecord`. Each message is a pydantic model: producers build it,
consumers parse the JSON with `Model.model_validate(...)`; fields a newer peer adds are ignored, so a
rolling upgrade never breaks a probe.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ModelState(Contract):
    """One model on a worker: its engine's load (chat), its batcher's (embedding), and its residency."""

    kind: str = "chat"
    loaded: bool = True
    in_flight: int = 0                        # HTTP requests for it in flight on the worker
    max_model_len: int | None = None
    # chat engines
    running: int = 0
    waiting: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    prefix_cache_hit_rate: float | None = None
    prefix_cache_hit_tokens: int = 0
    prefix_cache_queried_tokens: int = 0
    num_preemptions: int = 0
    step_time_s: float | None = None
    generated_tokens: int = 0
    recent_prefix_block_hashes: tuple[str, ...] = ()   # hex, newest last: what the router may find cached
    block_size: int | None = None
    # embedding batchers
    dim: int | None = None
    batches: int | None = None
    mean_batch_size: float | None = None
    inputs_dropped: int | None = None
    # residency on the worker (set by the worker, not the engine)
    memory_bytes: int | None = None           # weights + KV it takes there
    pinned: bool = False                      # never unloaded to make room
    idle_s: float | None = None               # since its last request
    heat: float | None = None                 # recent requests, decayed
    load_s: float | None = None               # how long loading it took
    unloading: bool = False

    @property
    def kv_usage(self) -> float | None:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else None

    @property
    def is_idle(self) -> bool:
        return self.in_flight + self.running + self.waiting == 0


class UnloadedModel(Contract):
    """A model the worker knows but has not loaded, and what loading it would take."""

    kind: str = "chat"
    memory_bytes: int | None = None


class WorkerState(Contract):
    """GET /internal/state of a worker: its device and memory, and each of its models."""

    worker_id: str = ""
    draining: bool = False
    in_flight: int = 0
    device: str = "cpu"
    num_threads: int | None = None
    rss_bytes: int | None = None
    memory_budget_bytes: int | None = None
    memory_used_bytes: int = 0
    num_loads: int = 0
    num_evictions: int = 0
    multiplex: str | None = None
    uptime_s: float = 0.0
    time: float = 0.0
    models: dict[str, ModelState] = Field(default_factory=dict)
    unloaded: dict[str, UnloadedModel] = Field(default_factory=dict)

    def memory_of(self, model: str) -> int | None:
        """What `model` takes (or would take) on this worker, as the worker computed it."""
        entry = self.models.get(model) or self.unloaded.get(model)
        return entry.memory_bytes if entry is not None else None


class LoadRequest(Contract):
    """POST /internal/load: load a model (unloading idle, unpinned ones if it does not fit)."""

    model: str
    pinned: bool = False


class LoadReply(Contract):
    model: str
    loaded: bool = True
    evicted: tuple[str, ...] = ()             # models unloaded to make room
    wait_s: float = 0.0
    memory_used_bytes: int = 0
    memory_budget_bytes: int | None = None


class UnloadRequest(Contract):
    """POST /internal/unload: drain a model (its requests finish, new ones get 503) and unload it."""

    model: str


class UnloadReply(Contract):
    model: str
    unloaded: bool
    memory_used_bytes: int = 0


class UsageRecord(Contract):
    """GET /internal/usage/{key}: what an ended request used (OpenAI's usage object, the device-seconds
    attributed to it, and how it ended), for the gateway whose client left before the usage chunk."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None
    device_seconds: float | None = None
    outcome: str | None = None


class TrafficReport(Contract):
    """What one gateway saw of a model since its last report: the autoscaler adds it to its own."""

    arrivals: int = 0
    held: int = 0                             # requests it holds now for want of a ready replica
    ttft: tuple[float, ...] = ()
    tpot: tuple[float, ...] = ()


class SyncReport(Contract):
    """POST /internal/sync from a gateway without a controller."""

    gateway_id: str = "?"
    wants: tuple[str, ...] = ()               # models it holds requests for: start them now
    traffic: dict[str, TrafficReport] = Field(default_factory=dict)


class ReplicaRecord(Contract):
    """A replica as the controller describes it to gateways and operators."""

    replica_id: str
    model: str
    url: str
    external: bool = False
    state: str = "starting"
    region: str | None = None
    wanted_region: str | None = None
    probes_passed: int = 0                    # passing probes so far: a gateway's failure holds until the next
    pid: int | None = None
    node_id: str | None = None
    failed_probes: int = 0
    worker: str | None = None                 # the pool worker it is loaded on
    engine: ModelState | None = None          # the model's entry of its worker's last state


class PoolWorkerRecord(Contract):
    worker_id: str
    pool: str
    url: str
    state: str
    pid: int | None = None
    models: tuple[str, ...] = ()
    region: str | None = None
    node_id: str | None = None
    memory_used_bytes: int | None = None
    memory_budget_bytes: int | None = None
    num_loads: int | None = None
    num_evictions: int | None = None


class TargetChange(Contract):
    """The controller changed a model's replica target (the autoscaler, or a pooled replica unloaded)."""

    time: float                  # wall clock, seconds
    model: str
    before: int
    after: int
    reason: str


class ControlState(Contract):
    """What the controller decided and knows beyond replicas: targets (and their recent changes, newest last),
    pool workers, the node inventory."""

    targets: dict[str, int] = Field(default_factory=dict)
    changes: tuple[TargetChange, ...] = ()
    pool_workers: tuple[PoolWorkerRecord, ...] = ()
    nodes: tuple[dict, ...] = ()


class SyncReply(ControlState):
    replicas: tuple[ReplicaRecord, ...] = ()
