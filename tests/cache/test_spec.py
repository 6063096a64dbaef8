"""CacheSpec: defaults (both caches off), the YAML shape through the config loader, per-model semantic
settings, and errors that name the field."""

from __future__ import annotations

import pytest
import yaml

from infercloud.cache.spec import (
    DEFAULT_THRESHOLD,
    CacheGroupSpec,
    CacheSpec,
    SemanticSettings,
)
from infercloud.config_loader import ConfigError, SpecFieldError, build

YAML = """
exact: {enabled: true, ttl_s: 600, max_entries: 500}
semantic:
  threshold: 0.9
  ttl_s: 1800
  models:
    - name: smollm2-135m-instruct
    - name: qwen
      threshold: 0.95
      max_entries: 100
groups:
  - name: acme
    tenants: [acme-prod, acme-staging]
redis_url: redis://127.0.0.1:6379/0
"""


KINDS = {"smollm2-135m-instruct": "chat", "qwen": "chat", "minilm": "embedding", "bge": "embedding"}


def test_defaults_are_off():
    spec = CacheSpec()
    assert not spec.is_enabled and not spec.exact.enabled and spec.semantic.models == ()
    assert spec.semantic.threshold == DEFAULT_THRESHOLD == 0.92 and spec.redis_url is None
    assert spec.resolve(KINDS) is spec


def test_yaml_shape():
    spec = build(CacheSpec, yaml.safe_load(YAML), "config.cache")
    assert spec.is_enabled and spec.exact.ttl_s == 600 and spec.exact.max_entries == 500
    assert spec.semantic.for_model("smollm2-135m-instruct") == SemanticSettings(0.9, 1800, 10000)
    assert spec.semantic.for_model("qwen") == SemanticSettings(0.95, 1800, 100)
    assert spec.semantic.for_model("other") is None
    assert spec.group_of("acme-staging") == "acme" and spec.group_of("globex") is None
    assert spec.semantic.embedding_model is None
    assert spec.resolve(KINDS).semantic.embedding_model == "minilm"     # the first embedding model


@pytest.mark.parametrize("data, message", [
    ({"exact": {"ttl_s": 0}}, "config.cache.exact.ttl_s: must be a positive number of seconds"),
    ({"exact": {"max_entries": 0}}, "config.cache.exact.max_entries: must be at least 1"),
    ({"semantic": {"threshold": 1.5}}, "config.cache.semantic.threshold: must be a cosine similarity in (0, 1]"),
    ({"semantic": {"models": [{"name": "a", "threshold": 0}]}}, "config.cache.semantic.models[0].threshold"),
    ({"semantic": {"models": [{"name": "a"}, {"name": "a"}]}}, "names must be unique"),
    ({"groups": [{"name": "a b", "tenants": ["x"]}]}, "config.cache.groups[0].name: must be 1 to 100"),
    ({"groups": [{"name": "g", "tenants": []}]}, "config.cache.groups[0].tenants: name at least one tenant"),
    ({"groups": [{"name": "g", "tenants": ["x"]}, {"name": "h", "tenants": ["x"]}]},
     "config.cache.groups: tenant 'x' is in two groups (g and h)"),
    ({"redis_url": "http://x"}, "config.cache.redis_url: expected a redis://"),
    ({"exact": {"enabled": "yes"}}, "config.cache.exact.enabled: expected bool"),
    ({"semantic": {"treshold": 0.9}}, "config.cache.semantic.treshold: unknown field"),
])
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as exc:
        build(CacheSpec, data, "config.cache")
    assert message in str(exc.value)


def test_a_spec_built_in_code_is_checked_too():
    with pytest.raises(SpecFieldError, match="tenants: name each tenant once"):
        CacheGroupSpec("g", ("x", "x"))


def test_resolve_names_the_field():
    def resolve(semantic: dict, kinds=KINDS) -> CacheSpec:
        return build(CacheSpec, {"semantic": semantic}, "config.cache").resolve(kinds)

    with pytest.raises(SpecFieldError, match=r"semantic.models\[0\].name: 'minilm' is not a chat model"):
        resolve({"models": [{"name": "minilm"}]})
    assert resolve({"models": [{"name": "qwen"}], "embedding_model": "bge"}).semantic.embedding_model == "bge"
    with pytest.raises(SpecFieldError, match="semantic.embedding_model: 'qwen' is not an embedding model"):
        resolve({"models": [{"name": "qwen"}], "embedding_model": "qwen"})
    with pytest.raises(SpecFieldError, match="needs an embedding model"):
        resolve({"models": [{"name": "qwen"}]}, {"qwen": "chat"})
