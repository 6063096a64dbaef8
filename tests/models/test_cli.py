"""The `infercloud models` command line, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.models.conftest import MINILM, SMOLLM2

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["INFERCLOUD_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "infercloud.cli", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_help_lists_the_models_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "models" in result.stdout


def test_models_help_lists_pull_list_rm() -> None:
    result = run_cli("models", "--help")
    assert result.returncode == 0
    for action in ("pull", "list", "rm"):
        assert action in result.stdout


def test_list_shows_pulled_catalog_models(smollm2_dir: Path, minilm_dir: Path) -> None:
    result = run_cli("models", "list")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "PULLED", "SIZE", "PATH"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert by_name[SMOLLM2][1:3] == ["chat", "yes"]
    assert by_name[MINILM][1:3] == ["embedding", "yes"]
    assert str(smollm2_dir) in result.stdout


def test_list_in_an_empty_home_shows_catalog_and_other_folders(tmp_path: Path) -> None:
    (tmp_path / "models" / "my-model").mkdir(parents=True)
    (tmp_path / "models" / "my-model" / "config.json").write_text("{}")
    result = run_cli("models", "list", home=tmp_path)
    assert result.returncode == 0, result.stderr
    by_name = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert by_name[SMOLLM2][2:4] == ["no", "-"]
    assert by_name["my-model"][1:3] == ["-", "yes"]


def test_rm_deletes_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "my-model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    result = run_cli("models", "rm", "my-model", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not folder.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_rm_of_an_unknown_name_fails_with_one_line(tmp_path: Path) -> None:
    result = run_cli("models", "rm", "no-such-model", home=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no-such-model" in result.stderr and "Traceback" not in result.stderr


def test_pull_of_an_unknown_name_fails_with_one_line(tmp_path: Path) -> None:
    result = run_cli("models", "pull", "gpt-17-ultra", home=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert SMOLLM2 in result.stderr


def test_python_dash_m_infercloud_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infercloud", "models", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0
    assert "pull" in result.stdout
