"""Configuration: frozen dataclasses for what `infercloud serve` runs, loaded from YAML with errors that name the field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from infercloud.engine.config import EngineConfig
from infercloud.router.base import POLICY_NAMES


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the field."""


@dataclass(frozen=True)
class ModelSpec:
    name: str                                 # the name clients send as `model`
    kind: Literal["chat", "embedding"] = "chat"
    path: str | None = None                   # catalog name or local folder; default: `name`
    engine: EngineConfig = field(default_factory=EngineConfig)  # chat models
    max_batch_size: int = 32                  # embedding models: dynamic batching
    max_wait_ms: float = 5.0
    # cloud mode (a config with a `cluster` section) only:
    replicas: int = 1                         # native worker processes serving this model
    routing: str = "least_load"               # round_robin | least_load | prefix_aware | session
    threads: int | None = None                # torch threads per replica; default cluster.threads_per_worker
    external: tuple[str, ...] = ()            # base URLs of OpenAI-compatible servers routed to as replicas

    @property
    def source(self) -> str:
        return self.path or self.name


@dataclass(frozen=True)
class ClusterSpec:
    """Where worker processes run. `local`: subprocesses of `infercloud serve` on loopback ports."""

    backend: Literal["local"] = "local"
    threads_per_worker: int = 1
    startup_timeout_s: float = 300.0          # a worker not healthy by then is killed and started again


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
    cluster: ClusterSpec | None = None        # set: cloud mode (gateway on host:port, workers by the backend)
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    gateway: GatewaySpec = field(default_factory=GatewaySpec)

    @property
    def is_cloud(self) -> bool:
        return self.cluster is not None


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


_SECTIONS = {"engine": EngineConfig, "cluster": ClusterSpec, "controller": ControllerSpec, "gateway": GatewaySpec}


def _convert(f: dataclasses.Field, value: Any, where: str) -> Any:
    if f.name in _SECTIONS:
        return _build(_SECTIONS[f.name], {} if value is None and f.name == "cluster" else value, where)
    if f.name == "external":
        if not isinstance(value, list) or not all(isinstance(u, str) and u.startswith(("http://", "https://"))
                                                  for u in value):
            raise ConfigError(f"{where}: expected a list of http(s):// base URLs, got {value!r}")
        return tuple(u.rstrip("/") for u in value)
    if f.name == "routing" and value not in POLICY_NAMES:
        raise ConfigError(f"{where}: must be one of {', '.join(POLICY_NAMES)}, got {value!r}")
    if f.name == "backend" and value != "local":
        raise ConfigError(f"{where}: must be 'local' (the only backend so far), got {value!r}")
    if f.name == "models":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: expected a non-empty list of models")
        specs = tuple(_build(ModelSpec, m, f"{where}[{i}]") for i, m in enumerate(value))
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: model names must be unique, got {names}")
        return specs
    if f.name == "kind" and value not in ("chat", "embedding"):
        raise ConfigError(f"{where}: must be 'chat' or 'embedding', got {value!r}")
    if value is None and "None" in str(f.type):
        return None
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool}.get(str(f.type).split(" ")[0])
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
    _check_positive(config)
    return config


def _check_positive(config: ServerConfig) -> None:
    checks = [(f"config.models[{i}].replicas", m.replicas >= (0 if m.external else 1),
               "must be at least 1 (0 only for a model with external URLs)") for i, m in enumerate(config.models)]
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
