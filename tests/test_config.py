"""Config loading: the single-box default, cloud sections, and errors that name the bad field."""

from __future__ import annotations

import dataclasses

import pytest

from infercloud.cli import main
from infercloud.cluster.local import config_to_yaml
from infercloud.config import ConfigError, load_config


def _load(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def test_default_is_single_box():
    config = load_config(None)
    assert not config.is_cloud
    assert [m.name for m in config.models] == ["smollm2-135m-instruct", "all-minilm-l6-v2"]


def test_pools_example_loads():
    config = load_config("examples/pools.yaml")
    assert [p.name for p in config.cluster.pools] == ["accel", "cpu"]
    assert {m.name: m.pool for m in config.models} == {"support-bot": "accel", "summarizer": "accel",
                                                        "all-minilm-l6-v2": "cpu"}
    assert config.models[0].slo.tpot_s == 0.1 and config.cluster.pools[1].device == "cpu"


def test_pool_worker_config_round_trips_through_yaml(tmp_path):
    cloud = load_config("examples/pools.yaml")
    worker = dataclasses.replace(cloud, cluster=None, port=9124, preload=(), memory_budget_gb=3.0, multiplex="fcfs")
    (tmp_path / "w.yaml").write_text(config_to_yaml(worker))
    back = load_config(tmp_path / "w.yaml")
    assert back.preload == () and back.memory_budget_gb == 3.0 and back.multiplex == "fcfs"
    assert back.models[1].slo.ttft_s == 5.0 and back.models[1].pool is None


def test_example_configs_load():
    assert not load_config("examples/serve.yaml").is_cloud
    cloud = load_config("examples/cloud.yaml")
    assert cloud.is_cloud and cloud.cluster.backend == "local"
    assert {m.routing for m in cloud.models} <= {"round_robin", "least_load", "prefix_aware", "session"}


def test_cloud_sections(tmp_path):
    config = _load(tmp_path, """
cluster: {threads_per_worker: 2}
gateway: {max_attempts: 5}
models:
  - {name: a, replicas: 3, routing: prefix_aware, threads: 1}
  - {name: b, replicas: 0, external: ["http://10.0.0.1:8000/"]}
""")
    assert config.is_cloud and config.cluster.threads_per_worker == 2 and config.gateway.max_attempts == 5
    assert config.models[0].replicas == 3 and config.models[0].routing == "prefix_aware"
    assert config.models[1].external == ("http://10.0.0.1:8000",)
    assert _load(tmp_path, "cluster:\nmodels: [{name: a}]").cluster.backend == "local"  # an empty section is on


@pytest.mark.parametrize("text, field", [
    ("models: [{name: a, routing: fastest}]", "config.models[0].routing"),
    ("cluster: {backend: k8s}", "config.cluster.backend"),
    ("cluster: {}\nmodels: [{name: a, replicas: 0}]", "config.models[0].replicas"),
    ("models: [{name: a, external: [not-a-url]}]", "config.models[0].external"),
    ("gateway: {max_atempts: 3}", "config.gateway.max_atempts"),
    ("controller: {unhealthy_after: 0}", "config.controller.unhealthy_after"),
    ("controller: {probe_interval_s: fast}", "config.controller.probe_interval_s"),
    ("models: [{name: a, pool: p}]", "config.models[0].pool"),
    ("cluster: {pools: [{name: p, memory_gb: 0}]}", "config.cluster.pools[0]"),
    ("cluster: {pools: [{name: p}, {name: p}]}", "config.cluster.pools"),
    ("cluster: {pools: [{name: p, device: tpu}]}", "config.cluster.pools[0].device"),
    ("multiplex: lifo", "config.multiplex"),
    ("preload: [nope]", "config.preload"),
    ("models: [{name: a, slo: {ttft: 1}}]", "config.models[0].slo.ttft"),
])
def test_bad_fields_are_named(tmp_path, text, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        _load(tmp_path, text)


def test_serve_with_a_bad_config_fails_naming_the_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("cluster: {}\nmodels: [{name: a, routing: fastest}]\n")
    assert main(["serve", "--config", str(path)]) == 1
    assert "config.models[0].routing" in capsys.readouterr().err


def test_worker_config_round_trips_through_yaml(tmp_path):
    cloud = _load(tmp_path, "cluster: {}\nmodels: [{name: a, path: b, replicas: 2, engine: {num_threads: 1}}]")
    worker = dataclasses.replace(cloud, cluster=None, port=9123, worker_id="a-0")
    (tmp_path / "w.yaml").write_text(config_to_yaml(worker))
    back = load_config(tmp_path / "w.yaml")
    assert not back.is_cloud and back.port == 9123 and back.worker_id == "a-0"
    assert back.models[0].source == "b" and back.models[0].engine.num_threads == 1 and back.models[0].replicas == 1
