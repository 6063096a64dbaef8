"""Configuration: frozen dataclasses for what `infercloud serve` runs, loaded from YAML with errors that name the field."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from infercloud.engine.config import EngineConfig
from infercloud.engine.step_loop import POLICIES as MULTIPLEX_POLICIES
from infercloud.engine.step_loop import SLO
from infercloud.internal_token import MIN_TOKEN_CHARS
from infercloud.router.base import POLICY_NAMES


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the field."""


class SpecFieldError(ValueError):
    """A spec's value out of its field's range: `field` names the field, `rule` says what it must be."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclass(frozen=True)
class PriceSpec:
    """What a model's requests cost: token prices billed to tenants, and the device's cost to the operator."""

    input_per_mtok: float = 0.0               # USD per million prompt tokens not served from the prefix cache
    cached_input_per_mtok: float = 0.0        # USD per million prompt tokens served from the prefix cache
    output_per_mtok: float = 0.0              # USD per million completion tokens
    device_per_hour: float = 0.0              # USD per hour of the device a replica runs on (operator's cost)


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
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if self.target_ongoing_requests <= 0 or self.max_step < 1:
            raise ValueError("target_ongoing_requests must be positive and max_step at least 1")


@dataclass(frozen=True)
class ModelSpec:
    name: str                                 # the name clients send as `model`
    kind: Literal["chat", "embedding"] = "chat"
    path: str | None = None                   # catalog name or local folder; default: `name`
    engine: EngineConfig = field(default_factory=EngineConfig)  # chat models
    max_batch_size: int = 32                  # embedding models: dynamic batching
    max_wait_ms: float = 5.0
    max_request_tokens: int = 300000          # embedding models: input tokens per request at most (OpenAI's limit)
    # cloud mode (a config with a `cluster` section) only:
    replicas: int = 1                         # native worker processes serving this model
    routing: str = "least_load"               # round_robin | least_load | prefix_aware | session
    threads: int | None = None                # torch threads per replica; default cluster.threads_per_worker
    external: tuple[str, ...] = ()            # base URLs of OpenAI-compatible servers routed to as replicas
    price: PriceSpec = field(default_factory=PriceSpec)
    autoscaling: AutoscalingSpec | None = None  # set: `replicas` is the start count, the controller scales
    slo: SLO = field(default_factory=SLO)     # TTFT/TPOT targets: steps on a shared worker, autoscaling
    pool: str | None = None                   # served by this pool's shared workers, not dedicated processes
    regions: dict[str, int] | None = None     # replicas per region (nodes labelled `region`); default: anywhere

    @property
    def source(self) -> str:
        return self.path or self.name


@dataclass(frozen=True)
class PoolSpec:
    """Shared workers that host many models each, loading and unloading them as the controller places them."""

    name: str
    workers: int = 1
    memory_gb: float = 4.0                    # per worker: weights + KV of the models it has loaded
    device: Literal["auto", "cpu", "cuda"] = "auto"   # the device kind its workers run models on
    threads: int | None = None                # torch threads per worker; default cluster.threads_per_worker
    multiplex: str = "slo"                    # slo | fcfs: which resident model steps next (engine/step_loop.py)
    region: str | None = None                 # its workers run on nodes of this region; default: anywhere


@dataclass(frozen=True)
class ClusterSpec:
    """Where worker processes run. `local`: subprocesses of `infercloud serve` on loopback ports of this
    machine. `ray`: Ray actors on the nodes of a Ray cluster (cluster/ray.py)."""

    backend: Literal["local", "ray"] = "local"
    address: str | None = None                # ray: the cluster to join ("auto", "head:6379"); None: auto
    region: str | None = None                 # local: the region of this machine (ray: each node's label)
    threads_per_worker: int = 1
    startup_timeout_s: float = 300.0          # a worker not healthy by then is killed and started again
    placement_timeout_s: float = 60.0         # ray: a worker no node can take by then is not started
    pools: tuple[PoolSpec, ...] = ()          # shared workers for models that name a `pool`


@dataclass(frozen=True)
class RegionSpec:
    """A region: nodes labelled `region: <name>` are in it; latencies order the regions requests spill to."""

    name: str
    latency_ms: dict[str, float] = field(default_factory=dict)   # to other regions (either side may say it)


@dataclass(frozen=True)
class ControllerSpec:
    probe_interval_s: float = 1.0             # how often every replica's /health and /internal/state are read
    probe_timeout_s: float = 2.0
    unhealthy_after: int = 3                  # failed probes in a row: the replica leaves routing, is restarted
    restart: bool = True                      # restart native replicas that die or turn unhealthy


@dataclass(frozen=True)
class GatewaySpec:
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


TIERS = ("interactive", "standard", "batch")   # highest first; the engine serves a higher tier first


SQL_INT_MAX = 2**31 - 1                        # tenant limits are stored in SQL INTEGER columns
BUDGET_PERIODS = ("day", "month", "total")
TENANT_LIMITS = ("requests_per_minute", "tokens_per_minute", "max_concurrent", "max_tokens_per_request")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")   # tenant and cache-group names
NAME_RULE = "must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
SALT_PREFIX_CACHE_REMOVED = ("salt_prefix_cache is no longer a setting: every tenant's prefix cache is now "
                             "always isolated (salted with a secret of the deployment); to let tenants share "
                             "cached prompt blocks, give them the same cache_group")


@dataclass(frozen=True)
class TenantSpec:
    """A tenant declared in the config: created in the database at start, its limits set from here.

    None means no limit. Budgets are in USD of billed token prices per calendar period (UTC).
    `check()` holds the range rules, the same for the config file, the CLI and the admin API.
    """

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
            yield "budget_period", f"must be day, month or total, got {short_repr(self.budget_period)}"
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


def short_repr(value: object) -> str:
    """A value for an error message, cut short: a message never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    models: tuple[ModelSpec, ...] = (
        ModelSpec("smollm2-135m-instruct", "chat"),
        ModelSpec("all-minilm-l6-v2", "embedding"),
    )
    max_body_bytes: int = 4 * 2**20           # larger bodies get 413
    max_waiting: int = 256                    # per model, beyond max_num_seqs running: then 503 + Retry-After
    drain_timeout_s: float = 30.0             # on SIGTERM, how long in-flight requests may take to finish
    worker_id: str = "worker-0"
    memory_budget_gb: float | None = None     # weights + KV of the models loaded here; None: no limit
    preload: tuple[str, ...] | None = None    # models loaded at start (None: all); others on first use
    load_on_request: bool = True              # False (pool workers): only POST /internal/load loads a model
    multiplex: str = "slo"                    # slo | fcfs: which loaded chat model steps next
    cluster: ClusterSpec | None = None        # set: cloud mode (gateway on host:port, workers by the backend)
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    gateway: GatewaySpec = field(default_factory=GatewaySpec)
    tenancy: TenancySpec | None = None        # set: API keys required (implies cloud mode)
    responses: ResponsesSpec = field(default_factory=ResponsesSpec)   # the Responses API's stored responses
    regions: tuple[RegionSpec, ...] = ()      # known regions and the latencies between them
    internal_token: str | None = field(default=None, repr=False)  # the internal plane's token (internal_token.py);
                                              # None: $INFERCLOUD_INTERNAL_TOKEN, else the home's file
    internal_only: bool = False               # set on the workers a cloud starts: every route but /health
                                              # needs the internal token (only the gateway may call them)

    @property
    def is_cloud(self) -> bool:
        return self.cluster is not None or self.tenancy is not None or self.gateway.controller_url is not None

    @property
    def cluster_spec(self) -> ClusterSpec:
        return self.cluster or ClusterSpec()


def _build(cls, data: Any, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown fields and naming any bad one."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(known)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(known[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


_SECTIONS = {"engine": EngineConfig, "cluster": ClusterSpec, "controller": ControllerSpec, "gateway": GatewaySpec,
             "price": PriceSpec, "tenancy": TenancySpec, "responses": ResponsesSpec, "autoscaling": AutoscalingSpec,
             "slo": SLO}


def _named_sections(cls, value: Any, where: str, what: str) -> tuple:
    """A list of sections of `cls` (pools, tenants), each with a unique `name`."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {what}")
    sections = tuple(_build(cls, item, f"{where}[{i}]") for i, item in enumerate(value))
    if len({s.name for s in sections}) != len(sections):
        raise ConfigError(f"{where}: {what[:-1]} names must be unique")
    return sections


def _model_names(value: Any, where: str, what: str = "model") -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ConfigError(f"{where}: expected a list of {what} names, got {value!r}")
    return tuple(value)


def _number_map(value: Any, where: str, kind: type) -> dict | None:
    """A mapping of names to non-negative numbers (replicas per region, latencies)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and
                                              not isinstance(v, bool) and v >= 0 and (kind is float or
                                                                                      isinstance(v, int))
                                              for k, v in value.items()):
        raise ConfigError(f"{where}: expected a mapping of region names to non-negative "
                          f"{'integers' if kind is int else 'numbers'}, got {value!r}")
    return {k: kind(v) for k, v in value.items()}


def _convert(f: dataclasses.Field, value: Any, where: str) -> Any:
    if f.name in _SECTIONS:
        return _build(_SECTIONS[f.name], {} if value is None and f.name in ("cluster", "tenancy") else value, where)
    if f.name == "pools":
        return _named_sections(PoolSpec, value, where, "pools")
    if f.name == "regions" and where == "config.regions":
        return _named_sections(RegionSpec, value, where, "regions")
    if f.name == "regions" and where.startswith("config.tenancy"):
        return _model_names(value, where, "region")
    if f.name in ("regions", "latency_ms"):
        return _number_map(value, where, int if f.name == "regions" else float)
    if f.name == "preload" or (f.name == "models" and where.startswith("config.tenancy")):
        return _model_names(value, where)
    if f.name == "multiplex" and value not in MULTIPLEX_POLICIES:
        raise ConfigError(f"{where}: must be one of {', '.join(MULTIPLEX_POLICIES)}, got {value!r}")
    if f.name == "device" and where.startswith("config.cluster") and value not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{where}: must be auto, cpu or cuda, got {value!r}")
    if f.name == "tenants":
        for i, tenant in enumerate(value if isinstance(value, list) else ()):
            if isinstance(tenant, dict) and "salt_prefix_cache" in tenant:
                raise ConfigError(f"{where}[{i}].salt_prefix_cache: {SALT_PREFIX_CACHE_REMOVED}")
        return _named_sections(TenantSpec, value, where, "tenants")
    if f.name == "external":
        if not isinstance(value, list) or not all(isinstance(u, str) and u.startswith(("http://", "https://"))
                                                  for u in value):
            raise ConfigError(f"{where}: expected a list of http(s):// base URLs, got {value!r}")
        return tuple(u.rstrip("/") for u in value)
    if f.name == "controller_url" and value is not None and \
            not (isinstance(value, str) and value.startswith(("http://", "https://"))):
        raise ConfigError(f"{where}: expected the http(s):// URL of the gateway running the controller, got {value!r}")
    if f.name == "routing" and value not in POLICY_NAMES:
        raise ConfigError(f"{where}: must be one of {', '.join(POLICY_NAMES)}, got {value!r}")
    if f.name == "backend" and value not in ("local", "ray"):
        raise ConfigError(f"{where}: must be 'local' or 'ray', got {value!r}")
    if f.name == "models":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: expected a non-empty list of models")
        specs = tuple(_build(ModelSpec, m, f"{where}[{i}]") for i, m in enumerate(value))
        specs = tuple(dataclasses.replace(s, replicas=sum(s.regions.values()))   # `regions` counts them
                      if s.regions is not None and "replicas" not in m else s for s, m in zip(specs, value))
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: model names must be unique, got {names}")
        return specs
    if f.name == "kind" and value not in ("chat", "embedding"):
        raise ConfigError(f"{where}: must be 'chat' or 'embedding', got {value!r}")
    if value is None and "None" in str(f.type):
        return None
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool}.get(str(f.type).split(" ")[0])
    if value is not None and isinstance(value, (int, float)) and "float" in str(f.type) and \
            not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where}: must not be negative, got {value!r}")
    if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {f.type}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, **overrides: Any) -> ServerConfig:
    """Read a YAML file (or take the defaults) and apply command-line overrides that are not None."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    config = _build(ServerConfig, data, "config")
    for port_field in ("port",):
        if not 0 < getattr(config, port_field) < 65536:
            raise ConfigError(f"config.{port_field}: must be between 1 and 65535")
    if config.internal_token is not None and len(config.internal_token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"config.internal_token: must have at least {MIN_TOKEN_CHARS} characters "
                          "(a long random string, the same on every gateway of the deployment)")
    _check_positive(config)
    _check_tenancy(config)
    _check_pools(config)
    _check_regions(config)
    return config


def _check_regions(config: ServerConfig) -> None:
    """Every region named (models, pools, tenants, the gateway, latencies) is declared in `regions`,
    when any is; a model's per-region counts add up to its replicas."""
    declared = {r.name for r in config.regions}
    named = [(f"config.models[{i}].regions", list(m.regions or ())) for i, m in enumerate(config.models)]
    named += [(f"config.cluster.pools[{i}].region", [p.region] if p.region else [])
              for i, p in enumerate(config.cluster_spec.pools)]
    named += [(f"config.regions[{i}].latency_ms", list(r.latency_ms)) for i, r in enumerate(config.regions)]
    named += [("config.gateway.region", [config.gateway.region] if config.gateway.region else []),
              ("config.cluster.region", [config.cluster_spec.region] if config.cluster_spec.region else [])]
    for i, tenant in enumerate(config.tenancy.tenants if config.tenancy else ()):
        named.append((f"config.tenancy.tenants[{i}]", [*(tenant.regions or ()), *filter(None, [tenant.home_region])]))
        if tenant.regions is not None and tenant.home_region is not None and tenant.home_region not in tenant.regions:
            raise ConfigError(f"config.tenancy.tenants[{i}].home_region: {tenant.home_region!r} is not one of its "
                              f"regions ({', '.join(tenant.regions)})")
    for where, regions in named:
        for region in regions:
            if declared and region not in declared:
                raise ConfigError(f"{where}: unknown region {region!r} (config.regions: {', '.join(sorted(declared))})")
    for i, model in enumerate(config.models):
        if model.regions is not None and model.autoscaling is None and sum(model.regions.values()) != model.replicas:
            raise ConfigError(f"config.models[{i}].replicas: {model.replicas} is not the sum of its regions "
                              f"({sum(model.regions.values())})")
        if model.regions is not None and (model.pool is not None or model.external):
            raise ConfigError(f"config.models[{i}].regions: a pooled or external model is placed by its pool or URL")


def _check_pools(config: ServerConfig) -> None:
    """A model's pool must exist; a worker's preload list names its own models."""
    pools = {p.name: p for p in config.cluster_spec.pools}
    names = {m.name for m in config.models}
    for i, model in enumerate(config.models):
        if model.pool is not None and model.pool not in pools:
            raise ConfigError(f"config.models[{i}].pool: unknown pool {model.pool!r} "
                              f"(cluster.pools: {', '.join(sorted(pools)) or 'none'})")
        if model.pool is not None and model.external:
            raise ConfigError(f"config.models[{i}].pool: a model with external URLs is not placed on a pool")
    for i, pool in enumerate(config.cluster_spec.pools):
        if pool.workers < 1 or pool.memory_gb <= 0:
            raise ConfigError(f"config.cluster.pools[{i}]: needs workers >= 1 and memory_gb > 0")
    for name in config.preload or ():
        if name not in names:
            raise ConfigError(f"config.preload: unknown model {name!r}")


def _check_positive(config: ServerConfig) -> None:
    checks = [(f"config.models[{i}].replicas", m.replicas >= (0 if m.external or m.autoscaling else 1),
               "must be at least 1 (0 only for a model with external URLs or autoscaling)")
              for i, m in enumerate(config.models)]
    checks += [(f"config.models[{i}].replicas", m.autoscaling is None or
                m.autoscaling.min_replicas <= m.replicas <= m.autoscaling.max_replicas,
                "must be within autoscaling.min_replicas and max_replicas") for i, m in enumerate(config.models)]
    checks += [(f"config.models[{i}].threads", m.threads is None or m.threads >= 1, "must be at least 1")
               for i, m in enumerate(config.models)]
    checks += [("config.gateway.max_attempts", config.gateway.max_attempts >= 1, "must be at least 1"),
               ("config.controller.unhealthy_after", config.controller.unhealthy_after >= 1, "must be at least 1"),
               ("config.controller.probe_interval_s", config.controller.probe_interval_s > 0, "must be positive")]
    if config.cluster is not None:
        checks.append(("config.cluster.threads_per_worker", config.cluster.threads_per_worker >= 1,
                       "must be at least 1"))
    for where, ok, rule in checks:
        if not ok:
            raise ConfigError(f"{where}: {rule}")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server on this machine: localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_tenancy(config: ServerConfig) -> None:
    """Without tenants the API is open, which only loopback may be; tenants may only name known models, and
    keep to the ranges of TenantSpec.check."""
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
        try:
            tenant.check()
        except SpecFieldError as exc:
            raise ConfigError(f"config.tenancy.tenants[{i}].{exc.field}: {exc.rule}") from exc
