"""Evaluation specs: built from the config's YAML by the loader, range rules naming the field."""

from __future__ import annotations

import re

import pytest
import yaml

from infercloud.config_loader import ConfigError, SpecFieldError, build
from infercloud.evaluation.spec import EvaluationSpec, EvaluatorSpec, check_targets

YAML = """
target: rag
sample: 0.25
degraded_below: 0.7
window: 20
evaluators:
  - {kind: json_schema}
  - {kind: length, min_chars: 10, max_chars: 400}
  - {kind: judge, name: helpful, model: judge-model, rubric: "Correct and brief.", max_tokens: 4}
  - {kind: groundedness}
"""


def spec(**fields) -> EvaluationSpec:
    return build(EvaluationSpec, {"target": "m", "evaluators": [{"kind": "refusal"}], **fields}, "evaluation")


def test_a_spec_is_built_from_yaml_with_names_defaulting_to_kinds():
    s = build(EvaluationSpec, yaml.safe_load(YAML), "evaluations[0]")
    assert (s.target, s.sample, s.degraded_below, s.window) == ("rag", 0.25, 0.7, 20)
    assert [e.name for e in s.evaluators] == ["json_schema", "length", "helpful", "groundedness"]
    assert s.evaluator("length") == EvaluatorSpec("length", min_chars=10, max_chars=400)
    assert s.evaluator("helpful").max_tokens == 4 and s.evaluator("nope") is None


@pytest.mark.parametrize("fields, field", [
    ({"sample": 0}, "sample"),
    ({"sample": 1.5}, "sample"),
    ({"window": 0}, "window"),
    ({"degraded_below": 1.5}, "degraded_below"),
    ({"evaluators": []}, "evaluators"),
    ({"target": ""}, "target"),
    ({"evaluators": [{"kind": "bleu"}]}, "evaluators[0].kind"),
    ({"evaluators": [{"kind": "judge", "rubric": "good"}]}, "evaluators[0].model"),
    ({"evaluators": [{"kind": "judge", "model": "j"}]}, "evaluators[0].rubric"),
    ({"evaluators": [{"kind": "judge", "model": "j", "rubric": "good", "max_tokens": 0}]}, "evaluators[0].max_tokens"),
    ({"evaluators": [{"kind": "length", "min_chars": 5, "max_chars": 2}]}, "evaluators[0].max_chars"),
    ({"evaluators": [{"kind": "refusal", "min_chars": 5}]}, "evaluators[0].min_chars"),
    ({"evaluators": [{"kind": "refusal", "name": "a b"}]}, "evaluators[0].name"),
])
def test_values_out_of_range_are_refused_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match="^" + re.escape(f"evaluation.{field}: ")):
        spec(**fields)


def test_check_raises_spec_field_errors_on_specs_made_in_code():
    with pytest.raises(SpecFieldError) as caught:
        EvaluationSpec("m", sample=0.0, evaluators=(EvaluatorSpec("refusal"),)).check()
    assert caught.value.field == "sample"
    with pytest.raises(SpecFieldError) as caught:
        EvaluationSpec("m", evaluators=(EvaluatorSpec("refusal"), EvaluatorSpec("length", name="refusal"))).check()
    assert (caught.value.field, "unique" in caught.value.rule) == ("evaluators", True)
    EvaluationSpec("m", sample=1.0, evaluators=(EvaluatorSpec("refusal"), EvaluatorSpec("length"))).check()


def test_two_evaluators_of_one_name_are_refused_by_the_loader_too():
    with pytest.raises(ConfigError, match="unique"):
        spec(evaluators=[{"kind": "length"}, {"kind": "refusal", "name": "length"}])


def test_a_target_has_one_evaluation():
    one = EvaluationSpec("m", evaluators=(EvaluatorSpec("refusal"),))
    check_targets((one, EvaluationSpec("n", evaluators=(EvaluatorSpec("refusal"),))))
    with pytest.raises(SpecFieldError, match="more than one"):
        check_targets((one, one))
