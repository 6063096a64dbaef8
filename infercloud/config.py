"""Configuration: the frozen specs of what `infercloud serve` runs (ServerConfig) and of each worker it runs
(WorkerConfig), each checking its own fields, and the loaders of their YAML files.

A spec checks its fields on construction (`__post_init__`, raising SpecFieldError that names the field),
so one built in code is held to the same rules as one read from a file; config_loader.py converts YAML
by the fields' types; load_config adds the rules that span specs (a model's pool exists, regions named
are declared).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import yaml

from infercloud.config_loader import ConfigError, SpecFieldError, build, short_repr
from infercloud.engine.config import EngineConfig
from infercloud.engine.step_loop import SLO, Policy
from infercloud.cache.spec import CacheSpec
from infercloud.policy.spec import EVERY_TENANT, PolicySpec
from infercloud.evaluation.spec import EvaluationSpec, check_targets
from infercloud.internal_token import MIN_TOKEN_CHARS
from infercloud.observability.tracing_spec import TracingSpec
from infercloud.pipelines.spec import PipelineSpec, resolve
from infercloud.router.base import POLICY_NAMES


def _require(ok: bool, field_name: str, rule: str) -> None:
    """A spec's rule: unless `ok`, SpecFieldError naming the field."""
    if not ok:
        raise SpecFieldError(field_name, rule)


def _is_http_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


@dataclass(frozen=True)
class PriceSpec:
    """What a model's requests cost: token prices billed to tenants, and the device's cost to the operator."""

    input_per_mtok: float = 0.0               # USD per million prompt tokens not served from the prefix cache
    cached_input_per_mtok: float = 0.0        # USD per million prompt tokens served from the prefix cache
    output_per_mtok: float = 0.0              # USD per million completion tokens
    device_per_hour: float = 0.0              # USD per hour of the device a replica runs on (operator's cost)
    cache_hit_per_mtok: float = 0.0           # USD per million tokens (prompt + completion) of a reply served
                                              # from the gateway's response cache


@dataclass(frozen=True)
class AutoscalingSpec:
    """Scale a model's native replicas on load and SLOs (controller/autoscaler.py has the algorithm)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 8.0    # running + queued per replica it aims for
    ttft_slo_s: float | None = None         # p90 targets; a breach asks for one more replica
    tpot_slo_s: float | None = None
    upscale_delay_s: float = 0.0            # how long more must be wanted before adding
    downscale_delay_s: float = 60.0         # how long fewer must be wanted before removing
    max_step: int = 2                       # replicas added or removed per decision
    idle_to_zero_s: float | None = None     # with min_replicas 0: idle this long -> 0 replicas
    max_kv_usage: float = 0.95              # a replica's KV cache fuller than this asks for one more

    def __post_init__(self) -> None:
        _require(self.max_replicas >= 1, "max_replicas", "must be at least 1")
        _require(0 <= self.min_replicas <= self.max_replicas, "min_replicas", "must be between 0 and max_replicas")
        _require(self.target_ongoing_requests > 0, "target_ongoing_requests", "must be positive")
        _require(self.max_step >= 1, "max_step", "must be at least 1")


@dataclass(frozen=True)
class WorkerModelSpec:
    """A model as a worker serves it: its weights, engine, batching and SLO (nothing of where a cloud runs it)."""

    name: str                                 # the name clients send as `model`
    kind: Literal["chat", "embedding"] = "chat"
    path: str | None = None                   # catalog name or local folder; default: `name`
    engine: EngineConfig = field(default_factory=EngineConfig)  # chat models
    max_batch_size: int = 32                  # embedding models: dynamic batching
    max_wait_ms: float = 5.0
    max_request_tokens: int = 300000          # embedding models: input tokens per request at most (OpenAI's limit)
    slo: SLO = field(default_factory=SLO)     # TTFT/TPOT targets: steps on a shared worker, autoscaling

    @property
    def source(self) -> str:
        return self.path or self.name


@dataclass(frozen=True)
class ModelSpec(WorkerModelSpec):
    """A model served: by a single box, or in cloud mode by native replicas, a pool or external URLs (the
    fields added to WorkerModelSpec say where a cloud runs it and how it routes, prices and scales it)."""

    # cloud mode (a config with a `cluster` section) only:
    replicas: int = 1                         # native worker processes serving this model
    routing: str = "least_load"               # round_robin | least_load | prefix_aware | session
    threads: int | None = None                # torch threads per replica; default cluster.threads_per_worker
    external: tuple[str, ...] = ()            # base URLs of OpenAI-compatible servers routed to as replicas
    price: PriceSpec = field(default_factory=PriceSpec)
    autoscaling: AutoscalingSpec | None = None  # set: `replicas` is the start count, the controller scales
    pool: str | None = None                   # served by this pool's shared workers, not dedicated processes
    regions: dict[str, int] | None = None     # replicas per region (nodes labelled `region`); default: anywhere

    @classmethod
    def from_config(cls, **fields: Any) -> ModelSpec:
        """As a config gives it: `regions` without `replicas` counts the replicas."""
        if fields.get("regions") is not None and "replicas" not in fields:
            fields["replicas"] = sum(fields["regions"].values())
        return cls(**fields)

    def __post_init__(self) -> None:
        _require(self.routing in POLICY_NAMES, "routing",
                 f"must be one of {', '.join(POLICY_NAMES)}, got {short_repr(self.routing)}")
        _require(all(map(_is_http_url, self.external)), "external",
                 f"expected a list of http(s):// base URLs, got {short_repr(list(self.external))}")
        # paths are appended to a base URL, each starting with '/'
        object.__setattr__(self, "external", tuple(url.rstrip("/") for url in self.external))
        _require(self.threads is None or self.threads >= 1, "threads", "must be at least 1")
        self._check_replicas()
        self._check_placement()

    def _check_replicas(self) -> None:
        _require(self.replicas >= (0 if self.external or self.autoscaling else 1), "replicas",
                 "must be at least 1 (0 only for a model with external URLs or autoscaling)")
        scaling = self.autoscaling
        _require(scaling is None or scaling.min_replicas <= self.replicas <= scaling.max_replicas, "replicas",
                 "must be within autoscaling.min_replicas and max_replicas")
        counted = sum(self.regions.values()) if self.regions is not None else self.replicas
        _require(scaling is not None or counted == self.replicas, "replicas",   # autoscaled: the counts are a split
                 f"{self.replicas} is not the sum of its regions ({counted})")

    def _check_placement(self) -> None:
        """Native replicas only are placed by region; a pool or a URL says where the others run."""
        _require(self.pool is None or not self.external, "pool", "a model with external URLs is not placed on a pool")
        _require(self.regions is None or (self.pool is None and not self.external), "regions",
                 "a pooled or external model is placed by its pool or URL")

    def for_worker(self, **engine: Any) -> WorkerModelSpec:
        """The model as a worker serves it (its cloud fields left out), with `engine` fields changed (a
        replica's device and threads)."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(WorkerModelSpec)}
        return WorkerModelSpec(**{**own, "engine": dataclasses.replace(self.engine, **engine)})


@dataclass(frozen=True)
class PoolSpec:
    """Shared workers that host many models each, loading and unloading them as the controller places them."""

    name: str
    workers: int = 1
    memory_gb: float = 4.0                    # per worker: weights + KV of the models it has loaded
    device: Literal["auto", "cpu", "cuda"] = "auto"   # the device kind its workers run models on
    threads: int | None = None                # torch threads per worker; default cluster.threads_per_worker
    multiplex: Policy = "slo"                 # which resident model steps next (engine/step_loop.py)
    region: str | None = None                 # its workers run on nodes of this region; default: anywhere

    def __post_init__(self) -> None:
        _require(self.workers >= 1, "workers", "must be at least 1")
        _require(self.memory_gb > 0, "memory_gb", "must be positive")


@dataclass(frozen=True)
class ClusterSpec:
    """Where worker processes run. `local`: `infercloud worker` subprocesses on loopback ports of this
    machine. `ray`: Ray actors on the nodes of a Ray cluster (cluster/ray.py)."""

    backend: Literal["local", "ray"] = "local"
    address: str | None = None                # ray: the cluster to join ("auto", "head:6379"); None: auto
    region: str | None = None                 # local: the region of this machine (ray: each node's label)
    threads_per_worker: int = 1
    startup_timeout_s: float = 300.0          # a worker not healthy by then is killed and started again
    placement_timeout_s: float = 60.0         # ray: a worker no node can take by then is not started
    pools: tuple[PoolSpec, ...] = ()          # shared workers for models that name a `pool`

    def __post_init__(self) -> None:
        _require(self.threads_per_worker >= 1, "threads_per_worker", "must be at least 1")


@dataclass(frozen=True)
class RegionSpec:
    """A region: nodes labelled `region: <name>` are in it; latencies order the regions requests spill to."""

    name: str
    latency_ms: dict[str, float] = field(default_factory=dict)   # to other regions (either side may say it)


@dataclass(frozen=True)
class ControllerSpec:
    """How the controller watches replicas."""

    probe_interval_s: float = 1.0             # how often every replica's /health and /internal/state are read
    probe_timeout_s: float = 2.0
    unhealthy_after: int = 3                  # failed probes in a row: the replica leaves routing, is restarted
    restart: bool = True                      # restart native replicas that die or turn unhealthy

    def __post_init__(self) -> None:
        _require(self.probe_interval_s > 0, "probe_interval_s", "must be positive")
        _require(self.unhealthy_after >= 1, "unhealthy_after", "must be at least 1")


@dataclass(frozen=True)
class GatewaySpec:
    """How the gateway routes, retries and holds requests."""

    max_attempts: int = 3                     # replicas tried per request (and per stream migration)
    retry_backoff_s: float = 0.05             # doubled after each failed attempt
    prefix_margin_tokens: int = 4096          # prefix_aware: load excess over the least loaded it tolerates...
    prefix_margin_ratio: float = 1.5          # ...and as a ratio; beyond both it falls back to least_load
    recent_routes: int = 8192                 # prompt block hashes remembered per replica for prefix_aware
    default_max_tokens: int = 256             # counted as outstanding for requests that give no max_tokens
    hold_timeout_s: float = 60.0              # a request for an autoscaled model with no ready replica waits
    max_held: int = 256                       # this long at most (then 503), and at most this many per model
    region: str | None = None                 # where this gateway is: the region of requests that name none
    spillover_outstanding: int = 32           # a replica with this many requests in flight is full: requests
                                              # go to the nearest region with room (router/regions.py)
    controller_url: str | None = None         # the gateway that runs the controller: set, this one
                                              # runs none and routes over that one's replicas (gateway/link.py)
    sync_interval_s: float = 0.25             # ...reading them this often

    def __post_init__(self) -> None:
        _require(self.max_attempts >= 1, "max_attempts", "must be at least 1")
        _require(self.controller_url is None or _is_http_url(self.controller_url), "controller_url",
                 f"expected the http(s):// URL of the gateway running the controller, "
                 f"got {short_repr(self.controller_url)}")


TIERS = ("interactive", "standard", "batch")   # highest first; the engine serves a higher tier first


SQL_INT_MAX = 2**31 - 1                        # tenant limits are stored in SQL INTEGER columns
BUDGET_PERIODS = ("day", "month", "total")
TENANT_LIMITS = ("requests_per_minute", "tokens_per_minute", "max_concurrent", "max_tokens_per_request")
MAX_NAME_CHARS = 100                           # tenant and cache-group names
NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}")
NAME_RULE = f"must be 1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit"
SALT_PREFIX_CACHE_REMOVED = ("salt_prefix_cache is no longer a setting: every tenant's prefix cache is now "
                             "always isolated (salted with a secret of the deployment); to let tenants share "
                             "cached prompt blocks, give them the same cache_group")


@dataclass(frozen=True)
class TenantSpec:
    """A tenant declared in the config: created in the database at start, its limits set from here.

    None means no limit. Budgets are in USD of billed token prices per calendar period (UTC).
    `check()` holds the range rules, the same for the config file, the CLI and the admin API. They are
    not run on construction: a tenant read back from the database is shown as stored, and the admin
    API answers a bad body with a 400 naming the field.
    """

    REMOVED_FIELDS: ClassVar[Mapping[str, str]] = MappingProxyType({"salt_prefix_cache": SALT_PREFIX_CACHE_REMOVED})

    name: str
    tier: str = "standard"                    # the highest tier its requests may ask for (and their default)
    models: tuple[str, ...] | None = None     # models it may call; None: all
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None      # prompt + max new tokens, charged on admission, settled at the end
    max_concurrent: int | None = None
    max_tokens_per_request: int | None = None # cap on max_tokens (and the default when a request sets none)
    budget_usd: float | None = None
    budget_period: str = "month"              # day | month | total
    cache_group: str | None = None            # tenants of one group share cached prompt blocks; None: its own
    home_region: str | None = None            # the region of its requests that send no x-infercloud-region
    regions: tuple[str, ...] | None = None    # data residency: its requests are served only in these regions

    def check(self) -> None:
        """Raise SpecFieldError naming the first field out of its range (types are checked where parsed)."""
        problem = next(self._problems(), None)
        if problem is not None:
            raise SpecFieldError(*problem)

    def _problems(self) -> Iterator[tuple[str, str]]:
        if not (isinstance(self.name, str) and NAME_PATTERN.fullmatch(self.name)):
            yield "name", f"{NAME_RULE}, got {short_repr(self.name)}"
        if self.tier not in TIERS:
            yield "tier", f"must be one of {', '.join(TIERS)}, got {short_repr(self.tier)}"
        if self.budget_period not in BUDGET_PERIODS:
            yield "budget_period", f"must be one of {', '.join(BUDGET_PERIODS)}, got {short_repr(self.budget_period)}"
        for name in TENANT_LIMITS:
            value = getattr(self, name)
            if value is not None and not 1 <= value <= SQL_INT_MAX:
                yield name, f"must be between 1 and {SQL_INT_MAX}, got {value}"
        if self.budget_usd is not None and not (math.isfinite(self.budget_usd) and self.budget_usd >= 0):
            yield "budget_usd", f"must be a finite number of USD, 0 or more, got {self.budget_usd}"
        if self.cache_group is not None and not NAME_PATTERN.fullmatch(self.cache_group):
            yield "cache_group", f"{NAME_RULE}, got {short_repr(self.cache_group)}"
        if self.regions is not None and not self.regions:
            yield "regions", "name at least one region (leave it out to allow every region)"
        for name, values, longest in (("models", self.models or (), 200), ("regions", self.regions or (), 50),
                                      ("home_region", filter(None, [self.home_region]), 50)):
            if any(not (1 <= len(value) <= longest and value.isprintable()) for value in values):
                yield name, f"names must be 1 to {longest} printable characters"
        if self.regions and self.home_region is not None and self.home_region not in self.regions:
            yield "home_region", (f"{short_repr(self.home_region)} is not one of its regions "
                                  f"({', '.join(self.regions)})")


@dataclass(frozen=True)
class TenancySpec:
    """Turns on auth: every /v1 request needs an API key of a tenant in this database."""

    database: str | None = None               # SQLAlchemy URL; default sqlite under the infercloud home
    tenants: tuple[TenantSpec, ...] = ()      # declared here (more can be made with `infercloud tenants create`)
    auth_cache_s: float = 1.0                 # a verified key is trusted this long before it is looked up again
    ledger_flush_s: float = 0.05              # usage rows wait at most this long to be written (one transaction)
    redis_url: str | None = None              # set: rate limits shared by every gateway using this Redis


@dataclass(frozen=True)
class ResponsesSpec:
    """Stored responses of the Responses API (POST /v1/responses with `store`, infercloud/responses/)."""

    ttl_s: float = 2592000.0                  # a stored response is kept this long (30 days), then 404 and deleted
    database: str | None = None               # SQLAlchemy URL; default: the tenancy database on a gateway with
                                              # tenants, else the SQLite file under the infercloud home
    purge_interval_s: float = 300.0           # expired rows are deleted at most this often (on a new response)

    def __post_init__(self) -> None:
        if not self.ttl_s > 0:
            raise ValueError("responses.ttl_s must be positive")


@dataclass(frozen=True)
class ServerSettings:
    """What ServerConfig and WorkerConfig share: one server process's address, request limits and drain time,
    which of its models it keeps loaded, and its internal plane (each declares its `models`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 4 * 2**20           # larger bodies get 413
    max_waiting: int = 256                    # per model, beyond max_num_seqs running: then 503 + Retry-After
    drain_timeout_s: float = 30.0             # on SIGTERM, how long in-flight requests may take to finish
    worker_id: str = "worker-0"
    memory_budget_gb: float | None = None     # weights + KV of the models loaded here; None: no limit
    preload: tuple[str, ...] | None = None    # models loaded at start (None: all); others on first use
    load_on_request: bool = True              # False (pool workers): only POST /internal/load loads a model
    multiplex: Policy = "slo"                 # which loaded chat model steps next (engine/step_loop.py)
    responses: ResponsesSpec = field(default_factory=ResponsesSpec)   # the Responses API's stored responses
    pipelines: tuple[PipelineSpec, ...] = ()  # embed -> retrieve -> rerank -> generate -> check, one deadline
    internal_token: str | None = field(default=None, repr=False)  # the internal plane's token (internal_token.py);
                                              # None: $INFERCLOUD_INTERNAL_TOKEN, else the home's file
    internal_only: bool = False               # set on the workers a cloud starts: every route but /health
                                              # needs the internal token (only the gateway may call them)
    tracing: TracingSpec = field(default_factory=TracingSpec)   # OpenTelemetry spans over OTLP (off by default)

    def __post_init__(self) -> None:
        _require(0 < self.port < 65536, "port", "must be between 1 and 65535")
        _require(self.internal_token is None or len(self.internal_token) >= MIN_TOKEN_CHARS, "internal_token",
                 f"must have at least {MIN_TOKEN_CHARS} characters (a long random string, the same on every "
                 "gateway of the deployment)")


def _check_preload(config: WorkerConfig | ServerConfig) -> None:
    """A server preloads only its own models."""
    names = {m.name for m in config.models}
    for name in config.preload or ():
        _require(name in names, "preload", f"unknown model {name!r}")


@dataclass(frozen=True)
class WorkerConfig(ServerSettings):
    """What one worker process runs: its models and server settings (ServerConfig.worker for a single box,
    ServerConfig.cloud_worker for the workers a cloud's controller starts)."""

    models: tuple[WorkerModelSpec, ...] = ()  # none: a pool's worker before any model names the pool

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_preload(self)
        _require(all(type(m) is WorkerModelSpec for m in self.models), "models",
                 "a worker's models are WorkerModelSpecs, without cloud fields (ModelSpec.for_worker)")


@dataclass(frozen=True)
class ServerConfig(ServerSettings):
    """What one `infercloud serve` runs: a single box (a worker, `worker()`), or with `cluster` or `tenancy` a
    cloud gateway."""

    models: tuple[ModelSpec, ...] = (
        ModelSpec("smollm2-135m-instruct", "chat"),
        ModelSpec("all-minilm-l6-v2", "embedding"),
    )
    cluster: ClusterSpec | None = None        # set: cloud mode (gateway on host:port, workers by the backend)
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    gateway: GatewaySpec = field(default_factory=GatewaySpec)
    tenancy: TenancySpec | None = None        # set: API keys required (implies cloud mode)
    regions: tuple[RegionSpec, ...] = ()      # known regions and the latencies between them
    cache: CacheSpec = field(default_factory=CacheSpec)   # the gateway's exact and semantic response caches
    policies: tuple[PolicySpec, ...] = ()     # governance rules the gateway enforces per tenant (infercloud/policy/)
    evaluations: tuple[EvaluationSpec, ...] = ()   # sampled scoring of live answers (infercloud/evaluation/)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_preload(self)

    @property
    def is_cloud(self) -> bool:
        return self.cluster is not None or self.tenancy is not None or self.gateway.controller_url is not None

    @property
    def cluster_spec(self) -> ClusterSpec:
        return self.cluster or ClusterSpec()

    def worker(self) -> WorkerConfig:
        """The single box's worker: this config's models and every server setting."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(ServerSettings)}
        return WorkerConfig(models=tuple(m.for_worker() for m in self.models), **settings)

    def cloud_worker(self, models: tuple[WorkerModelSpec, ...], **residency: Any) -> WorkerConfig:
        """A worker this cloud's controller starts: `models`, with `residency` settings (memory budget, preload,
        load_on_request, multiplex) and this config's request limits, drain time, internal token and tracing; internal
        only (only the gateway calls it). Its backend sets host, port and worker_id."""
        return WorkerConfig(models=models, max_body_bytes=self.max_body_bytes, max_waiting=self.max_waiting,
                            drain_timeout_s=self.drain_timeout_s, internal_token=self.internal_token,
                            internal_only=True, tracing=self.tracing, **residency)


def load_config(path: str | Path | None = None, **overrides: Any) -> ServerConfig:
    """Read a YAML file (or take the defaults) and apply command-line overrides that are not None."""
    data = {**(_read_yaml(path) if path is not None else {}), **{k: v for k, v in overrides.items() if v is not None}}
    config = build(ServerConfig, data, "config")
    _check_models(config)
    config = _resolve_pipelines(config)
    config = _resolve_cache(config)
    _check_tenancy(config)
    _check_policies(config)
    _check_evaluations(config)
    _check_regions(config)
    return config


def with_engine(config: ServerConfig, **fields: Any) -> ServerConfig:
    """The config with these engine fields (those not None) set on every chat model: `serve --dtype/--quantization`."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        return config
    try:
        models = tuple(dataclasses.replace(m, engine=dataclasses.replace(m.engine, **fields)) if m.kind == "chat"
                       else m for m in config.models)
    except ValueError as exc:
        raise ConfigError(f"command line: {exc}") from exc
    return dataclasses.replace(config, models=models)


def load_worker_config(path: str | Path) -> WorkerConfig:
    """A worker's YAML file, as a cloud's local backend writes it (cluster/local.py): a cloud field is unknown."""
    return build(WorkerConfig, _read_yaml(path), "config")


def _read_yaml(path: str | Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc


def _check_models(config: ServerConfig) -> None:
    """A file serves some model; a model's pool exists."""
    if not config.models:
        raise ConfigError("config.models: expected a non-empty list of models")
    pools = {p.name for p in config.cluster_spec.pools}
    for i, model in enumerate(config.models):
        if model.pool is not None and model.pool not in pools:
            raise ConfigError(f"config.models[{i}].pool: unknown pool {model.pool!r} "
                              f"(cluster.pools: {', '.join(sorted(pools)) or 'none'})")


def _resolve_pipelines(config: ServerConfig) -> ServerConfig:
    """Each pipeline's stages get their models (defaults: the first chat and embedding models), checked."""
    kinds = {m.name: m.kind for m in config.models}
    resolved = []
    for i, spec in enumerate(config.pipelines):
        try:
            resolved.append(resolve(spec, kinds))
        except SpecFieldError as exc:
            raise ConfigError(f"config.pipelines[{i}].{exc.field}: {exc.rule}") from exc
    return dataclasses.replace(config, pipelines=tuple(resolved))


def _resolve_cache(config: ServerConfig) -> ServerConfig:
    """The caches' models checked (the semantic cache's embedding model: default the first); a gateway's only."""
    if config.cache.is_enabled and not config.is_cloud:
        raise ConfigError("config.cache: the response caches are the gateway's; add a `cluster` or `tenancy` "
                          "section (see examples/cloud.yaml) to serve through one")
    try:
        return dataclasses.replace(config, cache=config.cache.resolve({m.name: m.kind for m in config.models}))
    except SpecFieldError as exc:
        raise ConfigError(f"config.cache.{exc.field}: {exc.rule}") from exc


def _check_policies(config: ServerConfig) -> None:
    """Rules are checked, named once, and apply to tenants the config declares (or to every tenant, "*")."""
    if config.policies and config.tenancy is None:
        raise ConfigError("config.policies: policies apply per tenant; add a `tenancy` section (see "
                          "examples/tenancy.yaml)")
    declared = {t.name for t in config.tenancy.tenants} if config.tenancy else set()
    seen: set[str] = set()
    for i, spec in enumerate(config.policies):
        try:
            spec.check()
        except SpecFieldError as exc:
            raise ConfigError(f"config.policies[{i}].{exc.field}: {exc.rule}") from exc
        if spec.name in seen:
            raise ConfigError(f"config.policies[{i}].name: {spec.name!r} is declared twice")
        seen.add(spec.name)
        unknown = sorted(set(spec.tenants) - declared - {EVERY_TENANT})
        if unknown:
            raise ConfigError(f"config.policies[{i}].tenants: unknown tenant {unknown[0]!r} (declare it under "
                              "tenancy.tenants, or use \"*\" for every tenant)")


def _check_evaluations(config: ServerConfig) -> None:
    """Evaluations are the gateway's; each names a served model or a pipeline, once; judges are served chat
    models."""
    if config.evaluations and not config.is_cloud:
        raise ConfigError("config.evaluations: live traffic is evaluated at the gateway; add a `cluster` or "
                          "`tenancy` section (see examples/cloud.yaml) to serve through one")
    chat = {m.name for m in config.models if m.kind == "chat"}
    targets = {m.name for m in config.models} | {p.name for p in config.pipelines}
    try:
        check_targets(config.evaluations)
    except SpecFieldError as exc:
        raise ConfigError(f"config.evaluations.{exc.field}: {exc.rule}") from exc
    for i, spec in enumerate(config.evaluations):
        try:
            spec.check()
        except SpecFieldError as exc:
            raise ConfigError(f"config.evaluations[{i}].{exc.field}: {exc.rule}") from exc
        if spec.target not in targets:
            raise ConfigError(f"config.evaluations[{i}].target: {spec.target!r} is neither a served model nor a "
                              "pipeline")
        for j, evaluator in enumerate(spec.evaluators):
            if evaluator.kind == "judge" and evaluator.model not in chat:
                raise ConfigError(f"config.evaluations[{i}].evaluators[{j}].model: {evaluator.model!r} is not a "
                                  "served chat model")


def _check_regions(config: ServerConfig) -> None:
    """Every region named (models, pools, tenants, the gateway, latencies) is declared in `regions`,
    when any is."""
    declared = {r.name for r in config.regions}
    if not declared:
        return
    named = [(f"config.models[{i}].regions", list(m.regions or ())) for i, m in enumerate(config.models)]
    named += [(f"config.cluster.pools[{i}].region", [p.region] if p.region else [])
              for i, p in enumerate(config.cluster_spec.pools)]
    named += [(f"config.regions[{i}].latency_ms", list(r.latency_ms)) for i, r in enumerate(config.regions)]
    named += [("config.gateway.region", [config.gateway.region] if config.gateway.region else []),
              ("config.cluster.region", [config.cluster_spec.region] if config.cluster_spec.region else [])]
    named += [(f"config.tenancy.tenants[{i}]", [*(t.regions or ()), *filter(None, [t.home_region])])
              for i, t in enumerate(config.tenancy.tenants if config.tenancy else ())]
    for where, regions in named:
        for region in regions:
            if region not in declared:
                raise ConfigError(f"{where}: unknown region {region!r} (config.regions: {', '.join(sorted(declared))})")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server on this machine: localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_tenancy(config: ServerConfig) -> None:
    """Without tenants the API is open, which only loopback may be; tenants may only name known models
    (each tenant's own ranges are TenantSpec.check's, run as it is loaded)."""
    if config.tenancy is None:
        if not is_loopback(config.host):
            raise ConfigError(f"config.host: {config.host} is not loopback, and with no `tenancy` section the API "
                              "would be open to anyone who can reach it; declare tenancy (API keys) or bind "
                              "127.0.0.1")
        return
    names = {m.name for m in config.models}
    for i, tenant in enumerate(config.tenancy.tenants):
        for model in tenant.models or ():
            if model not in names:
                raise ConfigError(f"config.tenancy.tenants[{i}].models: unknown model {model!r} "
                                  f"(configured: {', '.join(sorted(names))})")
