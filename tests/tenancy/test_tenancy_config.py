"""Config: the `tenancy:` section, tenants, per-model `price:`, and errors that name the field."""

from __future__ import annotations

import re

import pytest

from infercloud.config import (
    ConfigError,
    PriceSpec,
    TenancySpec,
    TenantSpec,
    load_config,
)

MODELS = "models: [{name: a}, {name: b}]\n"


def _load(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def test_tenancy_tenants_and_prices_load(tmp_path):
    config = _load(tmp_path, """
host: 0.0.0.0
tenancy:
  database: sqlite:////tmp/x.db
  auth_cache_s: 2.5
  ledger_flush_s: 0.1
  tenants:
    - name: acme
      tier: interactive
      models: [a]
      requests_per_minute: 60
      tokens_per_minute: 100000
      max_concurrent: 4
      max_tokens_per_request: 512
      budget_usd: 25
      budget_period: day
      cache_group: acme-team
      home_region: eu
    - {name: beta}
models:
  - {name: a, price: {input_per_mtok: 0.5, cached_input_per_mtok: 0.05, output_per_mtok: 1.5, device_per_hour: 2.0}}
  - {name: b}
""")
    assert config.is_cloud and config.cluster is None
    tenancy = config.tenancy
    assert (tenancy.database, tenancy.auth_cache_s, tenancy.ledger_flush_s) == ("sqlite:////tmp/x.db", 2.5, 0.1)
    assert tenancy.tenants[0] == TenantSpec("acme", tier="interactive", models=("a",), requests_per_minute=60,
                                            tokens_per_minute=100000, max_concurrent=4, max_tokens_per_request=512,
                                            budget_usd=25, budget_period="day", cache_group="acme-team",
                                            home_region="eu")
    assert tenancy.tenants[1] == TenantSpec("beta")
    assert config.models[0].price == PriceSpec(0.5, 0.05, 1.5, 2.0)
    assert config.models[1].price == PriceSpec()


def test_an_empty_tenancy_section_turns_on_auth_with_defaults(tmp_path):
    config = _load(tmp_path, "tenancy:\n" + MODELS)
    assert config.tenancy == TenancySpec() and config.is_cloud


def test_without_tenancy_there_is_none(tmp_path):
    config = _load(tmp_path, MODELS)
    assert config.tenancy is None and not config.is_cloud


def test_tenant_models_null_means_all(tmp_path):
    config = _load(tmp_path, "tenancy: {tenants: [{name: t, models: null}]}\n" + MODELS)
    assert config.tenancy.tenants[0].models is None


@pytest.mark.parametrize("tenant, field", [
    ("{name: t, tier: gold}", "config.tenancy.tenants[0].tier"),
    ("{name: t, budget_period: week}", "config.tenancy.tenants[0].budget_period"),
    ("{name: t, models: [a, zzz]}", "config.tenancy.tenants[0].models"),
    ("{name: t, models: a}", "config.tenancy.tenants[0].models"),
    ("{name: t, requests_per_minute: 0}", "config.tenancy.tenants[0].requests_per_minute"),
    ("{name: t, tokens_per_minute: -5}", "config.tenancy.tenants[0].tokens_per_minute"),
    ("{name: t, max_concurrent: 0}", "config.tenancy.tenants[0].max_concurrent"),
    ("{name: t, max_tokens_per_request: 0}", "config.tenancy.tenants[0].max_tokens_per_request"),
    ("{name: t, budget_usd: -1}", "config.tenancy.tenants[0].budget_usd"),
    ("{name: t, requests_per_minute: many}", "config.tenancy.tenants[0].requests_per_minute"),
    ("{name: 'a b'}", "config.tenancy.tenants[0].name"),
    (f"{{name: {'x' * 101}}}", "config.tenancy.tenants[0].name"),
    ("{name: t, requests_per_minute: 2147483648}", "config.tenancy.tenants[0].requests_per_minute"),
    ("{name: t, max_concurrent: 1180591620717411303424}", "config.tenancy.tenants[0].max_concurrent"),
    ("{name: t, budget_usd: .nan}", "config.tenancy.tenants[0].budget_usd"),
    ("{name: t, budget_usd: .inf}", "config.tenancy.tenants[0].budget_usd"),
    ("{name: t, rpm: 5}", "config.tenancy.tenants[0].rpm"),
])
def test_bad_tenant_fields_are_named(tmp_path, tenant, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        _load(tmp_path, f"tenancy: {{tenants: [{tenant}]}}\n{MODELS}")


def test_limits_go_up_to_the_largest_sql_integer_and_no_further(tmp_path):
    config = _load(tmp_path, "tenancy: {tenants: [{name: t, tokens_per_minute: 2147483647}]}\n" + MODELS)
    assert config.tenancy.tenants[0].tokens_per_minute == 2**31 - 1
    with pytest.raises(ConfigError, match=re.escape("config.tenancy.tenants[0].tokens_per_minute: must be between "
                                                    "1 and 2147483647, got 2147483648")):
        _load(tmp_path, "tenancy: {tenants: [{name: t, tokens_per_minute: 2147483648}]}\n" + MODELS)


@pytest.mark.parametrize("group, rule", [("1", "expected str"), ("'a b'", "must be 1 to 100 letters"),
                                         ("''", "must be 1 to 100 letters"), (f"{'g' * 101}", "must be 1 to 100")])
def test_a_bad_cache_group_is_named(tmp_path, group, rule):
    with pytest.raises(ConfigError, match=re.escape(f"config.tenancy.tenants[0].cache_group: {rule}")):
        _load(tmp_path, f"tenancy: {{tenants: [{{name: t, cache_group: {group}}}]}}\n{MODELS}")


def test_tenants_of_a_cache_group_load(tmp_path):
    config = _load(tmp_path, "tenancy: {tenants: [{name: a, cache_group: g}, {name: b, cache_group: g}, {name: c}]}\n"
                   + MODELS)
    assert [t.cache_group for t in config.tenancy.tenants] == ["g", "g", None]


def test_salt_prefix_cache_is_refused_and_names_cache_group(tmp_path):
    """Silently ignoring it would leave a tenant believing its cache was private while it shares by group."""
    for value in ("true", "false"):
        with pytest.raises(ConfigError, match=re.escape("config.tenancy.tenants[1].salt_prefix_cache")) as caught:
            _load(tmp_path, f"tenancy: {{tenants: [{{name: ok}}, {{name: t, salt_prefix_cache: {value}}}]}}\n"
                  + MODELS)
        assert "always isolated" in str(caught.value) and "cache_group" in str(caught.value)


def test_the_bad_tenant_is_named_by_its_index(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("config.tenancy.tenants[1].tier")):
        _load(tmp_path, "tenancy: {tenants: [{name: ok}, {name: t, tier: gold}]}\n" + MODELS)
    with pytest.raises(ConfigError, match=re.escape("config.tenancy.tenants[1].models: unknown model 'c'")):
        _load(tmp_path, "tenancy: {tenants: [{name: ok, models: [a]}, {name: t, models: [b, c]}]}\n" + MODELS)


@pytest.mark.parametrize("text, field", [
    ("tenancy: {tenants: [{name: t}, {name: t}]}", "config.tenancy.tenants"),
    ("tenancy: {tenants: {name: t}}", "config.tenancy.tenants"),
    ("tenancy: {tenants: [{tier: batch}]}", "config.tenancy.tenants[0]"),
    ("tenancy: {auth_cache_s: -1}", "config.tenancy.auth_cache_s"),
    ("tenancy: {databse: x}", "config.tenancy.databse"),
    ("tenancy: [a]", "config.tenancy"),
])
def test_bad_tenancy_fields_are_named(tmp_path, text, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        _load(tmp_path, text + "\n" + MODELS)


@pytest.mark.parametrize("price, field", [
    ("{input_per_mtok: -0.1}", "input_per_mtok"),
    ("{cached_input_per_mtok: -1}", "cached_input_per_mtok"),
    ("{output_per_mtok: -2.5}", "output_per_mtok"),
    ("{device_per_hour: -3}", "device_per_hour"),
    ("{output_per_mtok: cheap}", "output_per_mtok"),
    ("{per_token: 1}", "per_token"),
])
def test_bad_prices_are_named(tmp_path, price, field):
    with pytest.raises(ConfigError, match=re.escape(f"config.models[1].price.{field}")):
        _load(tmp_path, f"models: [{{name: a}}, {{name: b, price: {price}}}]")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.com"])
def test_a_non_loopback_host_needs_tenancy(tmp_path, host):
    with pytest.raises(ConfigError, match=re.escape(f"config.host: {host} is not loopback")):
        _load(tmp_path, f"host: '{host}'\n{MODELS}")
    with pytest.raises(ConfigError, match="config.host"):
        load_config(None, host=host)
    config = _load(tmp_path, f"host: '{host}'\ntenancy: {{}}\n{MODELS}")
    assert config.is_cloud and config.tenancy is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_hosts_need_no_tenancy(tmp_path, host):
    assert not _load(tmp_path, f"host: '{host}'\n{MODELS}").is_cloud


def test_tenancy_with_a_cluster_section(tmp_path):
    config = _load(tmp_path, "cluster: {}\ntenancy: {tenants: [{name: t, models: [b]}]}\n" + MODELS)
    assert config.is_cloud and config.cluster is not None and config.tenancy.tenants[0].models == ("b",)
