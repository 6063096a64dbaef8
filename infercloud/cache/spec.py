"""CacheSpec: the settings of the gateway's response caches (exact and semantic), checking their own fields.

YAML (under the server config's `cache:`; every field optional):

    cache:
      exact:                         # the same normalized request again -> the stored reply
        enabled: true                # default false
        ttl_s: 3600
        max_entries: 10000           # in-process store only (Redis evicts by its own maxmemory policy)
        allow_nondeterministic: false  # true: also requests without temperature 0 or a seed
      semantic:                      # the same conversation, a similar last user turn -> the stored reply
        embedding_model: all-minilm-l6-v2   # default: the config's first embedding model
        threshold: 0.92              # cosine similarity a hit needs (see docs/caching.md for how it was chosen)
        ttl_s: 3600
        max_entries_per_model: 10000
        allow_nondeterministic: false
        models:                      # on for these chat models only (default: none)
          - name: smollm2-135m-instruct
          - name: qwen2.5-0.5b-instruct
            threshold: 0.95          # per model, overrides the section's threshold, ttl_s, max_entries
      groups:                        # tenants that share one cache namespace (default: each tenant its own)
        - name: acme
          tenants: [acme-prod, acme-staging]
      redis_url: redis://127.0.0.1:6379/0   # default none: in-process caches, one per gateway

Rules across the config (models named exist and are chat models, the embedding model is one) are checked by
`CacheSpec.resolve`, which load_config calls with the config's models (and which settles the default
embedding model).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from infercloud.config_loader import SpecFieldError, short_repr

DEFAULT_THRESHOLD = 0.92     # all-MiniLM-L6-v2: close paraphrases score >= 0.94, different questions <= 0.89
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")   # the rule of tenant names (config.NAME_PATTERN)
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _require(ok: bool, field_name: str, rule: str) -> None:
    if not ok:
        raise SpecFieldError(field_name, rule)


def _check_ttl(ttl_s: float | None, name: str = "ttl_s") -> None:
    _require(ttl_s is None or (math.isfinite(ttl_s) and ttl_s > 0), name,
             f"must be a positive number of seconds, got {short_repr(ttl_s)}")


def _check_count(count: int | None, name: str) -> None:
    _require(count is None or (isinstance(count, int) and count >= 1), name,
             f"must be at least 1, got {short_repr(count)}")


def _check_threshold(threshold: float | None) -> None:
    _require(threshold is None or (math.isfinite(threshold) and 0 < threshold <= 1), "threshold",
             f"must be a cosine similarity in (0, 1], got {short_repr(threshold)}")


@dataclass(frozen=True)
class ExactCacheSpec:
    """The exact response cache: a reply is served again for the same normalized request (cache/keys.py)."""

    enabled: bool = False
    ttl_s: float = 3600.0
    max_entries: int = 10000                  # in-process store: least recently used beyond this go
    allow_nondeterministic: bool = False      # false: only temperature 0 or a seed is cached

    def __post_init__(self) -> None:
        _check_ttl(self.ttl_s)
        _check_count(self.max_entries, "max_entries")


@dataclass(frozen=True)
class SemanticModelSpec:
    """A chat model the semantic cache is on for; None fields take the semantic section's values."""

    name: str
    threshold: float | None = None
    ttl_s: float | None = None
    max_entries: int | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(self.name), "name", "name the chat model")
        _check_threshold(self.threshold)
        _check_ttl(self.ttl_s)
        _check_count(self.max_entries, "max_entries")


@dataclass(frozen=True)
class SemanticSettings:
    """One model's semantic cache settings, resolved (SemanticCacheSpec.for_model)."""

    threshold: float
    ttl_s: float
    max_entries: int


@dataclass(frozen=True)
class SemanticCacheSpec:
    """The semantic cache: off unless `models` names the chat models it is on for."""

    models: tuple[SemanticModelSpec, ...] = ()
    embedding_model: str | None = None        # None: the config's first embedding model
    threshold: float = DEFAULT_THRESHOLD
    ttl_s: float = 3600.0
    max_entries_per_model: int = 10000        # oldest go first beyond this
    allow_nondeterministic: bool = False

    def __post_init__(self) -> None:
        _check_threshold(self.threshold)
        _check_ttl(self.ttl_s)
        _check_count(self.max_entries_per_model, "max_entries_per_model")
        names = [m.name for m in self.models]
        repeated = sorted({n for n in names if names.count(n) > 1})
        _require(not repeated, "models", f"each model once ({short_repr(repeated[:1])} is given more than once)")

    def for_model(self, model: str) -> SemanticSettings | None:
        """The model's settings, None when the semantic cache is off for it."""
        spec = next((m for m in self.models if m.name == model), None)
        if spec is None:
            return None
        return SemanticSettings(spec.threshold if spec.threshold is not None else self.threshold,
                                spec.ttl_s if spec.ttl_s is not None else self.ttl_s,
                                spec.max_entries if spec.max_entries is not None else self.max_entries_per_model)


@dataclass(frozen=True)
class CacheGroupSpec:
    """Tenants that share one cache namespace: each one's replies may be served to the others."""

    name: str
    tenants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(GROUP_NAME.fullmatch(self.name)), "name",
                 f"must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit, "
                 f"got {short_repr(self.name)}")
        _require(bool(self.tenants), "tenants", "name at least one tenant")
        _require(len(set(self.tenants)) == len(self.tenants), "tenants", "name each tenant once")


@dataclass(frozen=True)
class CacheSpec:
    """The gateway's response caches: exact and semantic, in-process or in Redis, per tenant or per group."""

    exact: ExactCacheSpec = field(default_factory=ExactCacheSpec)
    semantic: SemanticCacheSpec = field(default_factory=SemanticCacheSpec)
    groups: tuple[CacheGroupSpec, ...] = ()
    redis_url: str | None = None              # set: both caches in this Redis, shared by every gateway
    key_prefix: str = "infercloud:cache"      # Redis keys start with it

    def __post_init__(self) -> None:
        _require(self.redis_url is None or (isinstance(self.redis_url, str)
                                            and self.redis_url.startswith(REDIS_SCHEMES)), "redis_url",
                 f"expected a redis://, rediss:// or unix:// URL, got {short_repr(self.redis_url)}")
        _require(bool(self.key_prefix), "key_prefix", "must not be empty")
        names = [g.name for g in self.groups]
        _require(len(set(names)) == len(names), "groups", "group names must be unique")
        seen: dict[str, str] = {}
        for group in self.groups:
            for tenant in group.tenants:
                _require(tenant not in seen, "groups",
                         f"tenant {short_repr(tenant)} is in two groups ({seen.get(tenant)} and {group.name})")
                seen[tenant] = group.name

    @property
    def is_enabled(self) -> bool:
        return self.exact.enabled or bool(self.semantic.models)

    def group_of(self, tenant: str) -> str | None:
        return next((g.name for g in self.groups if tenant in g.tenants), None)

    def resolve(self, kinds: Mapping[str, str]) -> CacheSpec:
        """The spec with its models settled against the served ones (`kinds`: name -> chat | embedding, in
        the config's order): the semantic models must be chat models, and its embedding model (default: the
        first embedding model) an embedding model. Raises SpecFieldError naming the field."""
        for i, spec in enumerate(self.semantic.models):
            _require(kinds.get(spec.name) == "chat", f"semantic.models[{i}].name",
                     f"{spec.name!r} is not a chat model of this config "
                     f"({', '.join(n for n, k in kinds.items() if k == 'chat') or 'none'})")
        if not self.semantic.models:
            return self
        embedders = [name for name, kind in kinds.items() if kind == "embedding"]
        name = self.semantic.embedding_model
        if name is None:
            _require(bool(embedders), "semantic.embedding_model",
                     "the semantic cache needs an embedding model, and this config serves none")
            return dataclasses.replace(self, semantic=dataclasses.replace(self.semantic, embedding_model=embedders[0]))
        _require(name in embedders, "semantic.embedding_model",
                 f"{name!r} is not an embedding model of this config ({', '.join(embedders) or 'none'})")
        return self
