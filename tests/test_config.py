"""Config loading: the single-box default, cloud sections, and errors that name the bad field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml

from infercloud.cli import main
from infercloud.cluster.local import config_to_yaml
from infercloud.config import (
    AutoscalingSpec,
    ClusterSpec,
    ConfigError,
    ControllerSpec,
    GatewaySpec,
    ModelSpec,
    PoolSpec,
    ServerConfig,
    SpecFieldError,
    TenantSpec,
    WorkerConfig,
    WorkerModelSpec,
    load_config,
    load_worker_config,
    with_engine,
)
from infercloud.config_loader import build
from infercloud.controller.dedicated import DedicatedReplicas
from infercloud.controller.pools import PoolManager
from infercloud.engine.config import EngineConfig
from infercloud.engine.step_loop import SLO


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


# -- worker configs -------------------------------------------------------------------------------

TOKEN = "t" * 32


def test_a_dedicated_replicas_worker_config_has_its_model_and_the_clouds_limits(tmp_path):
    cloud = dataclasses.replace(_load(tmp_path, """
cluster: {threads_per_worker: 2}
max_waiting: 7
drain_timeout_s: 12
memory_budget_gb: 9                # a single box's setting: a dedicated worker loads its one model at start
models:
  - {name: a, path: b, replicas: 2, routing: prefix_aware, price: {output_per_mtok: 1}, slo: {ttft_s: 2}}
  - {name: c, external: ["http://10.0.0.1:8000"], replicas: 0}
"""), internal_token=TOKEN)
    worker = DedicatedReplicas(cloud, None, None, lambda: 0.0).worker_config(cloud.models[0], "cpu", 3)
    assert worker == WorkerConfig(
        models=(WorkerModelSpec("a", path="b", engine=EngineConfig(device="cpu", num_threads=3), slo=SLO(ttft_s=2)),),
        max_waiting=7, drain_timeout_s=12, internal_token=TOKEN, internal_only=True)


def test_a_pool_workers_config_has_the_pools_models_and_memory():
    cloud = dataclasses.replace(load_config("examples/pools.yaml"), internal_token=TOKEN)
    manager = PoolManager(cloud, None, None, None, None, lambda: 0.0, lambda replica: None, lambda model: None)
    accel = manager.worker_config(cloud.cluster.pools[0])      # device auto: each model's own engine device
    assert accel == WorkerConfig(
        models=tuple(WorkerModelSpec(m.name, path="smollm2-135m-instruct", slo=m.slo,
                                     engine=dataclasses.replace(m.engine, num_threads=2)) for m in cloud.models[:2]),
        memory_budget_gb=3.0, preload=(), load_on_request=False, multiplex="slo", internal_token=TOKEN,
        internal_only=True)
    embeddings = manager.worker_config(cloud.cluster.pools[1])
    assert embeddings.models == (WorkerModelSpec("all-minilm-l6-v2", "embedding",
                                                 engine=EngineConfig(device="cpu", num_threads=1)),)
    assert embeddings.memory_budget_gb == 1.0


def test_a_worker_config_round_trips_through_yaml_without_its_token(tmp_path):
    cloud = dataclasses.replace(load_config("examples/pools.yaml"), internal_token=TOKEN)
    worker = dataclasses.replace(PoolManager(cloud, None, None, None, None, lambda: 0.0, lambda replica: None,
                                             lambda model: None).worker_config(cloud.cluster.pools[0]),
                                 host="127.0.0.1", port=9124, worker_id="accel-w0")
    text = config_to_yaml(worker)                      # as cluster/local.py writes it
    assert TOKEN not in text                           # the token goes in the worker's environment
    (tmp_path / "w.yaml").write_text(text)
    assert load_worker_config(tmp_path / "w.yaml") == dataclasses.replace(worker, internal_token=None)


@pytest.mark.parametrize("text, field", [
    ("cluster: {}\nmodels: [{name: a}]", "config.cluster"),
    ("gateway: {max_attempts: 2}", "config.gateway"),
    ("tenancy: {}", "config.tenancy"),
    ("models: [{name: a, replicas: 2}]", "config.models[0].replicas"),
    ("models: [{name: a, pool: p}]", "config.models[0].pool"),
])
def test_a_cloud_field_in_a_worker_config_is_named(tmp_path, text, field):
    (tmp_path / "w.yaml").write_text(text)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]") + ": unknown field"):
        load_worker_config(tmp_path / "w.yaml")


def test_the_worker_command_fails_on_a_cloud_config_naming_the_field(tmp_path, capsys):
    (tmp_path / "w.yaml").write_text("cluster: {}\nmodels: [{name: a}]\n")
    assert main(["worker", "--config", str(tmp_path / "w.yaml")]) == 1
    assert "config.cluster: unknown field" in capsys.readouterr().err


def test_a_single_box_worker_has_every_server_setting():
    box = load_config("examples/serve.yaml")
    worker = box.worker()
    assert type(worker) is WorkerConfig and all(type(m) is WorkerModelSpec for m in worker.models)
    assert [(m.name, m.kind, m.engine) for m in worker.models] == [(m.name, m.kind, m.engine) for m in box.models]
    shared = [f.name for f in dataclasses.fields(WorkerConfig) if f.name != "models"]
    assert {name: getattr(worker, name) for name in shared} == {name: getattr(box, name) for name in shared}


def test_a_worker_config_takes_no_cloud_model_and_preloads_its_own_models():
    with pytest.raises(SpecFieldError, match="models"):
        WorkerConfig(models=(ModelSpec("m"),))
    with pytest.raises(SpecFieldError, match="preload: unknown model 'x'"):
        WorkerConfig(models=(WorkerModelSpec("m"),), preload=("x",))


# -- cluster backends and regions -----------------------------------------------------------------

DECLARED = "regions: [{name: a, latency_ms: {b: 20}}, {name: b}]\n"


def test_ray_backend_with_an_address(tmp_path):
    cluster = _load(tmp_path, "cluster: {backend: ray, address: 'head:6379'}\nmodels: [{name: m}]").cluster
    assert (cluster.backend, cluster.address) == ("ray", "head:6379")
    assert _load(tmp_path, "cluster: {backend: ray}\nmodels: [{name: m}]").cluster.address is None


def test_an_unknown_backend_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.cluster\.backend: must be 'local' or 'ray', got 'k8s'"):
        _load(tmp_path, "cluster: {backend: k8s}\nmodels: [{name: m}]")


def test_regions_with_latencies(tmp_path):
    config = _load(tmp_path, DECLARED + "gateway: {region: a}\nmodels: [{name: m}]")
    assert [(r.name, r.latency_ms) for r in config.regions] == [("a", {"b": 20.0}), ("b", {})]
    assert config.gateway.region == "a"
    assert load_config(None).regions == () and load_config(None).gateway.spillover_outstanding == 32


def test_region_names_must_be_unique(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.regions: region names must be unique"):
        _load(tmp_path, "regions: [{name: a}, {name: a}]")


def test_a_models_region_counts_set_its_replicas(tmp_path):
    config = _load(tmp_path, DECLARED + "cluster: {}\nmodels: [{name: m, regions: {a: 1, b: 2}}, {name: n}]")
    assert config.models[0].regions == {"a": 1, "b": 2} and config.models[0].replicas == 3
    assert config.models[1].regions is None and config.models[1].replicas == 1
    same = _load(tmp_path, DECLARED + "cluster: {}\nmodels: [{name: m, replicas: 3, regions: {a: 1, b: 2}}]")
    assert same.models[0].replicas == 3


def test_replicas_that_are_not_the_sum_of_the_regions_are_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.models\[0\]\.replicas: 2 is not the sum of its regions \(3\)"):
        _load(tmp_path, DECLARED + "cluster: {}\nmodels: [{name: m, replicas: 2, regions: {a: 1, b: 2}}]")
    scaled = _load(tmp_path, DECLARED + "cluster: {}\nmodels: [{name: m, replicas: 2, regions: {a: 1, b: 2}, "
                             "autoscaling: {min_replicas: 1, max_replicas: 4}}]")
    assert scaled.models[0].replicas == 2               # autoscaled: the counts are a split, not a total


@pytest.mark.parametrize("model", [
    "{name: m, pool: p, regions: {a: 1}}",
    "{name: m, external: ['http://10.0.0.1:8000'], regions: {a: 1}}",
])
def test_regions_on_a_pooled_or_external_model_are_an_error(tmp_path, model):
    with pytest.raises(ConfigError, match=r"config\.models\[0\]\.regions: a pooled or external model"):
        _load(tmp_path, DECLARED + f"cluster: {{pools: [{{name: p}}]}}\nmodels: [{model}]")


@pytest.mark.parametrize("text, field", [
    ("models: [{name: m, regions: {a: 1, c: 1}}]", "config.models[0].regions"),
    ("cluster: {pools: [{name: p, region: c}]}", "config.cluster.pools[0].region"),
    ("gateway: {region: c}", "config.gateway.region"),
    ("cluster: {region: c}", "config.cluster.region"),
    ("tenancy: {tenants: [{name: t, regions: [a, c]}]}", "config.tenancy.tenants[0]"),
    ("tenancy: {tenants: [{name: u}, {name: t, home_region: c}]}", "config.tenancy.tenants[1]"),
])
def test_unknown_region_names_are_rejected_once_regions_are_declared(tmp_path, text, field):
    escaped = field.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(ConfigError, match=rf"{escaped}: unknown region 'c' \(config\.regions: a, b\)"):
        _load(tmp_path, DECLARED + text)
    _load(tmp_path, text)                               # no regions declared: any name goes


def test_an_unknown_region_in_a_latency_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.regions\[1\]\.latency_ms: unknown region 'c'"):
        _load(tmp_path, "regions: [{name: a}, {name: b, latency_ms: {a: 5, c: 5}}]")


def test_a_tenants_home_region_must_be_one_of_its_regions(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.tenancy\.tenants\[0\]\.home_region: 'b' is not one of its"):
        _load(tmp_path, "tenancy: {tenants: [{name: t, regions: [a], home_region: b}]}")
    tenant = _load(tmp_path, DECLARED + "tenancy: {tenants: [{name: t, regions: [a, b], home_region: b}]}"
                   ).tenancy.tenants[0]
    assert (tenant.regions, tenant.home_region) == (("a", "b"), "b")


@pytest.mark.parametrize("counts", ["{a: -1}", "{a: 1.5}", "{a: 1.0}", "{a: true}", "{a: '2'}", "[a, b]"])
def test_replica_counts_per_region_are_non_negative_integers(tmp_path, counts):
    with pytest.raises(ConfigError, match=r"config\.models\[0\]\.regions: expected a mapping of region names to "
                                          "non-negative integers"):
        _load(tmp_path, f"cluster: {{}}\nmodels: [{{name: m, regions: {counts}}}]")


def test_latencies_are_non_negative_numbers(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.regions\[0\]\.latency_ms: expected a mapping of region names "
                                          "to non-negative numbers"):
        _load(tmp_path, "regions: [{name: a, latency_ms: {b: -1}}, {name: b}]")
    assert _load(tmp_path, "regions: [{name: a, latency_ms: {b: 2.5}}, {name: b}]").regions[0].latency_ms == {"b": 2.5}


@pytest.mark.parametrize("path", sorted(Path("examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_loads(path):
    load_config(path)


def test_the_kuberay_gateway_carries_a_ray_config_and_the_cluster_labels_two_regions(tmp_path):
    gateway = {d["kind"]: d for d in yaml.safe_load_all(Path("examples/kuberay/gateway.yaml").read_text())}
    embedded = tmp_path / "cloud.yaml"
    embedded.write_text(gateway["ConfigMap"]["data"]["cloud.yaml"])
    config = load_config(embedded)
    assert config.cluster.backend == "ray" and config.cluster.address.endswith("-head-svc:6379")
    (cluster,) = yaml.safe_load_all(Path("examples/kuberay/raycluster.yaml").read_text())
    regions = {g["labels"]["region"] for g in cluster["spec"]["workerGroupSpecs"]}
    assert regions == {r.name for r in config.regions}


# -- the loader: a field's type says how its YAML is read ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class LeafSpec:
    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.name == "bad":
            raise SpecFieldError("name", "must not be 'bad'")


@dataclasses.dataclass(frozen=True)
class _Tree:
    count: int = 0
    ratio: float = 0.5
    label: str = "x"
    on: bool = False
    mode: Literal["a", "b"] = "a"
    note: str | None = None
    leaf: LeafSpec | None = None
    leaves: tuple[LeafSpec, ...] = ()
    tags: tuple[str, ...] = ()
    counts: dict[str, int] | None = None
    delays: dict[str, float] = dataclasses.field(default_factory=dict)


def test_the_loader_converts_each_kind_of_type():
    tree = build(_Tree, {"count": 2, "ratio": 3, "label": "y", "on": True, "mode": "b", "note": None,
                         "leaf": {"name": "l"}, "leaves": [{"name": "p"}, {"name": "q", "weight": 2}],
                         "tags": ["t", "u"], "counts": {"a": 1}, "delays": {"a": 2.5, "b": 1}}, "top")
    assert tree == _Tree(2, 3, "y", True, "b", None, LeafSpec("l"), (LeafSpec("p"), LeafSpec("q", 2.0)), ("t", "u"),
                         {"a": 1}, {"a": 2.5, "b": 1.0})
    with pytest.raises(ConfigError, match=r"top\.leaf: LeafSpec\.__init__\(\) missing"):  # `leaf:` empty: a
        build(_Tree, {"leaf": None}, "top")                                                  # LeafSpec() (no name)
    assert build(_Tree, {"note": None, "counts": None}, "top") == _Tree()


@pytest.mark.parametrize("data, message", [
    ({"count": True}, r"top\.count: expected int, got True"),
    ({"count": 1.5}, r"top\.count: expected int, got 1\.5"),
    ({"ratio": "fast"}, r"top\.ratio: expected float, got 'fast'"),
    ({"ratio": False}, r"top\.ratio: expected float, got False"),
    ({"ratio": -1}, r"top\.ratio: must not be negative, got -1"),
    ({"label": 5}, r"top\.label: expected str, got 5"),
    ({"on": 1}, r"top\.on: expected bool, got 1"),
    ({"note": 5}, r"top\.note: expected str \| None, got 5"),
    ({"mode": "c"}, r"top\.mode: must be 'a' or 'b', got 'c'"),
    ({"leaf": [1]}, r"top\.leaf: expected a mapping, got list"),
    ({"leaf": {"name": "bad"}}, r"top\.leaf\.name: must not be 'bad'"),
    ({"leaves": {"name": "p"}}, r"top\.leaves: expected a list of leafs"),
    ({"leaves": [{"name": "p"}, {"name": "p"}]}, r"top\.leaves: leaf names must be unique \('p' is given"),
    ({"leaves": [{"name": "p", "wieght": 1}]}, r"top\.leaves\[0\]\.wieght: unknown field \(known: name, weight\)"),
    ({"tags": "t"}, r"top\.tags: expected a list of str, got 't'"),
    ({"tags": ["t", 1]}, r"top\.tags\[1\]: expected str, got 1"),
    ({"counts": {"a": 1.5}}, r"top\.counts: expected a mapping of region names to non-negative integers"),
    ({"counts": {"a": True}}, r"top\.counts: expected a mapping of region names to non-negative integers"),
    ({"delays": {"a": -1}}, r"top\.delays: expected a mapping of region names to non-negative numbers"),
    ({"delays": None}, r"top\.delays: expected a mapping of region names"),
    ({"size": 1}, r"top\.size: unknown field \(known: count, ratio, label, on, mode, note, leaf, leaves"),
])
def test_the_loader_names_the_field_a_value_does_not_fit(data, message):
    with pytest.raises(ConfigError, match=message):
        build(_Tree, data, "top")


def test_regions_means_what_each_spec_declares(tmp_path):
    """Three fields named `regions`, three types: the loader reads each by its type, not its name or path."""
    config = _load(tmp_path, DECLARED + "cluster: {}\nmodels: [{name: m, regions: {a: 1, b: 2}}]\n"
                   "tenancy: {tenants: [{name: t, regions: [a]}]}")
    assert [type(r).__name__ for r in config.regions] == ["RegionSpec", "RegionSpec"]
    assert config.models[0].regions == {"a": 1, "b": 2} and config.tenancy.tenants[0].regions == ("a",)
    with pytest.raises(ConfigError, match=r"config\.tenancy\.tenants\[0\]\.regions: expected a list of str"):
        _load(tmp_path, "tenancy: {tenants: [{name: t, regions: {a: 1}}]}\nmodels: [{name: m}]")
    with pytest.raises(ConfigError, match=r"config\.regions\[0\]: expected a mapping, got str"):
        _load(tmp_path, "regions: [a]\nmodels: [{name: m}]")


def test_an_empty_optional_section_has_its_defaults(tmp_path):
    config = _load(tmp_path, "cluster:\ntenancy:\nmodels: [{name: m, autoscaling: }]")
    assert config.cluster == ClusterSpec() and config.models[0].autoscaling == AutoscalingSpec()
    assert config.tenancy is not None and config.tenancy.tenants == ()


@pytest.mark.parametrize("make, field", [
    (lambda: ModelSpec("m", routing="fastest"), "routing"),
    (lambda: ModelSpec("m", replicas=0), "replicas"),
    (lambda: ModelSpec("m", external=("ftp://x",)), "external"),
    (lambda: ModelSpec("m", threads=0), "threads"),
    (lambda: ModelSpec("m", replicas=2, regions={"a": 1}), "replicas"),
    (lambda: ModelSpec("m", pool="p", regions={"a": 1}), "regions"),
    (lambda: ModelSpec("m", pool="p", external=("http://x",), replicas=0), "pool"),
    (lambda: ModelSpec("m", replicas=5, autoscaling=AutoscalingSpec(max_replicas=3)), "replicas"),
    (lambda: AutoscalingSpec(min_replicas=3, max_replicas=2), "min_replicas"),
    (lambda: PoolSpec("p", workers=0), "workers"),
    (lambda: PoolSpec("p", memory_gb=0), "memory_gb"),
    (lambda: ClusterSpec(threads_per_worker=0), "threads_per_worker"),
    (lambda: ControllerSpec(unhealthy_after=0), "unhealthy_after"),
    (lambda: GatewaySpec(max_attempts=0), "max_attempts"),
    (lambda: GatewaySpec(controller_url="gateway:8000"), "controller_url"),
    (lambda: ServerConfig(port=0), "port"),
    (lambda: ServerConfig(internal_token="short"), "internal_token"),
])
def test_a_spec_built_in_code_is_held_to_the_files_rules(make, field):
    with pytest.raises(SpecFieldError) as caught:
        make()
    assert caught.value.field == field


def test_a_spec_built_in_code_is_normalized_as_a_file_is():
    assert ModelSpec("m", replicas=0, external=("http://10.0.0.1:8000/",)).external == ("http://10.0.0.1:8000",)
    assert ModelSpec.from_config(name="m", regions={"a": 1, "b": 2}).replicas == 3   # as a file gives it


def test_a_tenant_checks_its_own_fields_and_its_home_region():
    TenantSpec("t", regions=("a",), home_region="a").check()
    with pytest.raises(SpecFieldError) as caught:
        TenantSpec("t", regions=("a",), home_region="b").check()
    assert caught.value.field == "home_region" and "is not one of its regions (a)" in caught.value.rule


def test_serve_dtype_and_quantization_set_every_chat_model():
    config = with_engine(load_config(None), dtype="bfloat16", quantization="int8")
    chat = [m for m in config.models if m.kind == "chat"]
    assert chat and all(m.engine.dtype == "bfloat16" and m.engine.quantization == "int8" for m in chat)
    assert all(m.engine.quantization is None for m in config.models if m.kind == "embedding")
    assert with_engine(config) is config   # nothing given, nothing changed
    with pytest.raises(ConfigError, match="quantization"):
        with_engine(load_config(None), quantization="int4")
