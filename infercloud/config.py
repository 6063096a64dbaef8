"""Configuration: frozen dataclasses for what `infercloud serve` runs, loaded from YAML with errors that name the field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from infercloud.engine.config import EngineConfig


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

    @property
    def source(self) -> str:
        return self.path or self.name


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


def _convert(f: dataclasses.Field, value: Any, where: str) -> Any:
    if f.name == "engine":
        return _build(EngineConfig, value, where)
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
    return config
