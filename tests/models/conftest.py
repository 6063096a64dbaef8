"""Session fixtures: the real catalog models, pulled once into the default INFERCLOUD_HOME.

`smollm2_dir` lives in tests/conftest.py (the engine tests share it); `minilm_dir` is here.

`make test` pulls them first, so these fixtures find complete folders and return at
once; run alone, the first test pays for the download and conversion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infercloud.models.pull import pull

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return pull(MINILM, progress=False)


@pytest.fixture()
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An INFERCLOUD_HOME of its own, for tests that must not touch the real cache."""
    home = tmp_path / "home"
    monkeypatch.setenv("INFERCLOUD_HOME", str(home))
    return home
