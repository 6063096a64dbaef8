"""The command line starts light: building its parsers, and running the commands that load no model, import
neither torch, transformers, tokenizers nor numpy (nor SQLAlchemy, until a command opens a database).

Each check runs in a fresh interpreter, since this test process has long imported everything. No timings:
what is imported is what makes `infercloud --help` slow or quick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "tokenizers", "numpy", "opentelemetry")

# Runs `infercloud` with argv (a JSON list) in this interpreter, then prints the heavy modules it imported.
PROBE = """
import contextlib, io, json, sys
from infercloud.cli import main
argv = json.loads(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        status = main(argv)
    except SystemExit as exc:          # --help and --version exit from argparse
        status = exc.code
print(json.dumps({"status": status, "imported": sorted(m for m in sys.argv[2].split(",") if m in sys.modules)}))
"""


def run_python(code: str, *args: str, home: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "INFERCLOUD_HOME": str(home)}, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_building_the_parser_imports_nothing_heavy(tmp_path: Path) -> None:
    code = ("import sys; from infercloud.cli import build_parser; build_parser(); import infercloud.cli as c; "
            "print(sorted(m for m in ('torch','transformers','numpy','tokenizers','sqlalchemy') if m in sys.modules))")
    assert run_python(code, home=tmp_path) == "[]"


@pytest.mark.parametrize("argv", [
    ["--help"], ["--version"], ["serve", "--help"], ["generate", "--help"], ["bench", "serve", "--help"],
    ["models", "list"], ["models", "--help"],
], ids=" ".join)
def test_commands_without_a_database_stay_light(tmp_path: Path, argv: list[str]) -> None:
    outcome = json.loads(run_python(PROBE, json.dumps(argv), ",".join((*HEAVY, "sqlalchemy")), home=tmp_path))
    assert outcome == {"status": 0, "imported": []}


@pytest.mark.parametrize("argv", [
    ["tenants", "list"], ["tenants", "create", "acme"], ["keys", "list"], ["usage"], ["usage", "--by", "tenant"],
    ["audit"], ["eval", "report"],
], ids=" ".join)
def test_database_commands_load_no_model_library(tmp_path: Path, argv: list[str]) -> None:
    outcome = json.loads(run_python(PROBE, json.dumps(argv), ",".join(HEAVY), home=tmp_path))
    assert outcome == {"status": 0, "imported": []}


def test_the_parsers_offer_what_the_reports_take() -> None:
    """The choices the light parsers spell out are those of the SQL modules that own them."""
    from infercloud.evaluation import cli as eval_cli
    from infercloud.evaluation.report import GROUPS as EVAL_GROUPS
    from infercloud.metering.reports import GROUPS as USAGE_GROUPS
    from infercloud.policy.audit import KINDS, MAX_QUERY_LIMIT
    from infercloud.tenancy import cli as tenancy_cli

    assert tenancy_cli.USAGE_GROUPS == USAGE_GROUPS
    assert tenancy_cli.AUDIT_KINDS == KINDS
    assert tenancy_cli.AUDIT_MAX_ROWS == MAX_QUERY_LIMIT
    assert eval_cli.REPORT_GROUPS == EVAL_GROUPS
