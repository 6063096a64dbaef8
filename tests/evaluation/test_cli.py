"""`infercloud eval report` on a real SQLite file: a table or JSON, grouped and filtered."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from infercloud.cli import main
from infercloud.evaluation.evaluators import JudgeUsage
from infercloud.evaluation.store import ScoreRow, ScoreStore
from infercloud.store.database import open_database

DAY1, DAY2 = dt.datetime(2026, 11, 1, 10, 0), dt.datetime(2026, 11, 2, 10, 0)


@pytest.fixture
def db(tmp_path) -> list[str]:
    url = f"sqlite:///{tmp_path}/t.db"
    engine = open_database(url)
    ScoreStore(engine).write([
        ScoreRow(DAY1, "chat-a", "chat-a", "refusal", 1.0, True, 1, "r1", "not a refusal"),
        ScoreRow(DAY1, "chat-a", "chat-a", "refusal", 0.0, False, 1, "r2", "refusal"),
        ScoreRow(DAY2, "chat-a", "chat-a", "helpful", 0.75, True, 1, "r3", "graded 4 of 5",
                 usage=JudgeUsage(150, 1, 0.125)),
        ScoreRow(DAY2, "rag", "rag", "groundedness", 0.5, False, 2, "r4", "1 of 2 sentences"),
    ])
    engine.dispose()
    return ["--database", url]


def test_the_report_prints_a_table_by_evaluator(db, capsys):
    assert main(["eval", "report", *db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["EVALUATOR", "COUNT", "MEAN", "PASS_RATE", "JUDGE_TOKENS", "JUDGE_DEVICE_S"]
    assert [line.split() for line in lines[1:]] == [["groundedness", "1", "0.500", "0.0%", "-", "-"],
                                                    ["helpful", "1", "0.750", "100.0%", "151", "0.125"],
                                                    ["refusal", "2", "0.500", "50.0%", "-", "-"]]


def test_the_report_by_day_for_one_target_as_json(db, capsys):
    assert main(["eval", "report", "--by", "day", "--target", "chat-a", "--json", *db]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["day"], r["evaluator"], r["count"], r["pass_rate"]) for r in rows] == [
        ("2026-11-01", "refusal", 2, 0.5), ("2026-11-02", "helpful", 1, 1.0)]


def test_the_report_by_target_since_a_time(db, capsys):
    assert main(["eval", "report", "--by", "target", "--since", "2026-11-02", *db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TARGET", "EVALUATOR", "COUNT", "MEAN", "PASS_RATE", "JUDGE_TOKENS", "JUDGE_DEVICE_S"]
    assert [line.split()[:3] for line in lines[1:]] == [["chat-a", "helpful", "1"], ["rag", "groundedness", "1"]]


def test_a_bad_time_is_one_line_of_error(db, capsys):
    assert main(["eval", "report", "--since", "yesterday-ish", *db]) == 1
    assert "error: not a date or time" in capsys.readouterr().err


def test_the_database_of_a_config_is_used(tmp_path, db, capsys):
    config = tmp_path / "cloud.yaml"
    config.write_text(f"tenancy:\n  database: {db[1]}\n")
    assert main(["eval", "report", "--config", str(config), "--json"]) == 0
    assert sum(r["count"] for r in json.loads(capsys.readouterr().out)) == 4
