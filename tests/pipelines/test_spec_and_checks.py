"""Pipeline specs (order rules, models settled against the served ones, the config's YAML) and the checks."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from infercloud.config import load_config
from infercloud.config_loader import ConfigError, SpecFieldError, build
from infercloud.pipelines.checks import check_groundedness, check_json_schema, check_regex, sentences
from infercloud.pipelines.spec import PipelineSpec, resolve

KINDS = {"chat-a": "chat", "emb-a": "embedding", "chat-b": "chat"}


def spec(*stages: dict, **fields) -> PipelineSpec:
    return build(PipelineSpec, {"name": "rag", "stages": list(stages), **fields}, "pipeline")


def test_stages_get_the_first_models_of_their_kind_unless_they_name_one():
    s = resolve(spec({"kind": "embed"}, {"kind": "retrieve", "collection": "docs"}, {"kind": "rerank"},
                     {"kind": "generate", "model": "chat-b"}, {"kind": "check", "rule": "groundedness"}), KINDS)
    assert [(x.kind, x.model) for x in s.stages] == [("embed", "emb-a"), ("retrieve", None), ("rerank", "chat-a"),
                                                      ("generate", "chat-b"), ("check", "emb-a")]


@pytest.mark.parametrize("stages, field, words", [
    ([{"kind": "retrieve", "collection": "d"}], "stages", "needs an embed stage"),
    ([{"kind": "embed"}, {"kind": "check", "rule": "regex", "pattern": "x"}], "stages", "after the generate"),
    ([{"kind": "generate"}, {"kind": "generate", "name": "again"}], "stages", "at most one generate"),
    ([{"kind": "embed"}, {"kind": "embed"}], "stages", "unique"),
    ([{"kind": "embed", "on_budget": "skip"}], "on_budget", "cannot be skipped"),
    ([{"kind": "embed"}, {"kind": "retrieve"}], "collection", "names one"),
    ([{"kind": "generate", "template": "no placeholder"}], "template", "{passages}"),
    ([{"kind": "generate"}, {"kind": "check", "rule": "regex", "pattern": "("}], "pattern", "regular expression"),
    ([{"kind": "generate"}, {"kind": "check"}], "rule", "needs one"),
])
def test_a_bad_pipeline_names_the_field(stages, field, words):
    with pytest.raises(ConfigError) as caught:
        spec(*stages)
    assert field in str(caught.value) and words in str(caught.value)


def test_a_stage_must_name_a_served_model_of_its_kind():
    with pytest.raises(SpecFieldError, match="needs a served chat model"):
        resolve(spec({"kind": "generate", "model": "emb-a"}), KINDS)
    with pytest.raises(SpecFieldError, match="served model's name"):
        resolve(build(PipelineSpec, {"name": "chat-a", "stages": [{"kind": "generate"}]}, "p"), KINDS)


def test_the_config_declares_pipelines_and_checks_their_models(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"pipelines": [{"name": "rag", "slo_s": 5, "stages": [
        {"kind": "embed"}, {"kind": "retrieve", "collection": "docs", "filter": {"lang": {"$in": ["en"]}}},
        {"kind": "generate", "max_tokens": 32},
        {"kind": "check", "rule": "json_schema", "schema": {"type": "object", "required": ["a"]}}]}]}))
    config = load_config(path)
    (rag,) = config.pipelines
    assert rag.slo_s == 5 and rag.stage("generate").model == "smollm2-135m-instruct"
    assert rag.stage("retrieve").filter == {"lang": {"$in": ["en"]}} and config.worker().pipelines == (rag,)
    path.write_text(yaml.safe_dump({"pipelines": [{"name": "rag", "stages": [{"kind": "embed",
                                                                              "model": "nope"}]}]}))
    with pytest.raises(ConfigError, match=r"config.pipelines\[0\].stages\[0\].model"):
        load_config(path)


def test_json_schema_and_regex_checks():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    assert check_json_schema('{"city": "Paris"}', schema).passed
    failed = check_json_schema('{"town": "Paris"}', schema)
    assert not failed.passed and "city" in failed.reason
    assert not check_json_schema("Paris", schema).passed
    assert check_regex("It was founded in 1820.", r"\b1[0-9]{3}\b").passed
    assert not check_regex("No year here.", r"\b1[0-9]{3}\b").passed


def test_groundedness_needs_every_sentence_near_a_passage():
    assert sentences("Paris is big. It has a tower!\nYes") == ["Paris is big.", "It has a tower!", "Yes"]
    passages = np.eye(3, dtype=np.float32)[:2]
    near, far = np.array([0.9, 0.1, 0.4], np.float32), np.array([0.1, 0.1, 0.99], np.float32)
    parts = [near / np.linalg.norm(near), far / np.linalg.norm(far)]
    result = check_groundedness(["a.", "b."], np.stack(parts), passages, threshold=0.5)
    assert not result.passed and result.detail["supported"] == 1
    assert [s["supported"] for s in result.detail["sentences"]] == [True, False]
    assert check_groundedness(["a."], np.stack(parts[:1]), passages, threshold=0.5).passed
    assert check_groundedness([], np.zeros((0, 3), np.float32), passages, threshold=0.5).passed
