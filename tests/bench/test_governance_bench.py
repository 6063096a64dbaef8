"""The governance bench's pure helpers: statistics, the SSE reader, the summaries, and its configs (loaded, not
served)."""

from __future__ import annotations

import json

import pytest
import yaml

from infercloud.bench.governance import (RULED_POLICIES, content_of, counts_by_evaluator, judge_errors, judge_summary,
                                         log_problems, overhead_config, overhead_summary, p50_p90_ms, problem_line,
                                         rotated, ttft_config)
from infercloud.config import load_config


def test_p50_p90_in_milliseconds():
    s = p50_p90_ms([0.001 * i for i in range(1, 11)])
    assert s["n"] == 10 and s["p50_ms"] == pytest.approx(5.5)
    assert 9.0 <= s["p90_ms"] <= 10.0
    assert p50_p90_ms([0.002]) == {"n": 1, "p50_ms": 2.0, "p90_ms": 2.0}
    assert p50_p90_ms([]) == {"n": 0, "p50_ms": None, "p90_ms": None}


def test_rotation_gives_every_way_every_position():
    ways = ["direct", "plain", "ruled"]
    assert [rotated(ways, i) for i in range(4)] == [ways, ["plain", "ruled", "direct"], ["ruled", "direct", "plain"],
                                                    ways]
    assert {tuple(rotated(ways, i)).index("ruled") for i in range(3)} == {0, 1, 2}


def test_overhead_summary_differences_and_target():
    times = {"direct": [0.010] * 5, "plain": [0.0115] * 5, "ruled": [0.0120, 0.0121, 0.0122, 0.0119, 0.0120]}
    o = overhead_summary(times)
    assert o["gateway_added_p50_ms"] == pytest.approx(1.5)
    assert o["rules_added_p50_ms"] == pytest.approx(0.5)
    assert o["rules_added_paired_median_ms"] == pytest.approx(0.5)
    assert o["within_target"] is True
    assert overhead_summary({**times, "ruled": [0.0130] * 5})["within_target"] is False


def test_content_of_reads_chat_chunks():
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    assert content_of(f"data: {json.dumps(chunk)}") == "Hi"
    assert content_of('data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}') == ""
    assert content_of('data: {"choices": [], "usage": {"completion_tokens": 3}}') == ""
    assert content_of("data: [DONE]") == "" and content_of("") == "" and content_of(": keep-alive") == ""
    with pytest.raises(ValueError, match="error event"):
        content_of('data: {"error": {"message": "boom"}}')


def _phase(mode, ttfts, judge=None):
    return {"mode": mode, "ttft_s": ttfts, "ttft": p50_p90_ms(ttfts), "judge": judge}


def test_judge_summary_ratios_per_round_and_pooled():
    judge = {"judge_scores": 9, "judge_scores_during_load": 6, "answers_scored": 9, "answers_expected": 9}
    phases = [_phase("off", [0.10, 0.10, 0.10]), _phase("on", [0.11, 0.11, 0.11], judge),
              _phase("off", [0.12, 0.12, 0.12]), _phase("on", [0.12, 0.12, 0.12], judge)]
    s = judge_summary(phases)
    assert [r["on_over_off_p50"] for r in s["rounds"]] == pytest.approx([1.1, 1.0])
    assert s["pooled"]["off"]["n"] == 6 and s["pooled"]["off"]["p50_ms"] == pytest.approx(110)
    assert s["pooled_on_over_off_p50"] == pytest.approx(115 / 110)
    assert s["off_over_first_off_p50"] == pytest.approx([1.2])
    assert (s["judge_scores_total"], s["judge_scores_during_load"], s["answers_sent"]) == (18, 12, 18)
    one = judge_summary(phases[:2])
    assert len(one["rounds"]) == 1 and one["off_over_first_off_p50"] == []


def test_judge_summary_survives_a_phase_without_answers():
    s = judge_summary([_phase("off", []), _phase("on", [0.1], None)])
    assert s["rounds"][0]["on_over_off_p50"] is None and s["pooled_on_over_off_p50"] is None
    assert s["judge_scores_total"] == 0


def test_admin_report_and_metrics_parsing():
    report = {"object": "list", "by": "evaluator", "data": [
        {"evaluator": "judge", "count": 7, "mean_value": 0.5, "pass_rate": 0.6},
        {"evaluator": "length", "count": 9, "mean_value": 1.0, "pass_rate": 1.0}]}
    assert counts_by_evaluator(report) == {"judge": 7, "length": 9}
    assert counts_by_evaluator({"data": []}) == {}
    metrics = "\n".join([
        "# HELP infercloud_evaluation_dropped_total Samples or scores lost",
        'infercloud_evaluation_dropped_total{reason="judge_error",target="m"} 2.0',
        'infercloud_evaluation_dropped_total{reason="queue_full",target="m"} 5.0',
        'infercloud_evaluation_dropped_total{reason="judge_error",target="n"} 1.0'])
    assert judge_errors(metrics) == 3 and judge_errors("") == 0


def test_log_problems_reads_what_the_log_gained_and_its_workers_logs(tmp_path):
    workers = tmp_path / "run"
    workers.mkdir()
    (workers / "w-0.log").write_text("2026 INFO fine\n2026 ERROR infercloud.worker: engine step failed\n")
    log = tmp_path / "server.log"
    log.write_text("old ERROR line\n")
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.write(f"gateway on http://x: m x1; workers log to {workers}\n"
                "WARNING infercloud.evaluation: judge judge (m) of m failed: RuntimeError\n")
    found = log_problems(log, offset)
    assert found["count"] == 2 and "old ERROR" not in " ".join(found["lines"])
    assert log_problems(tmp_path / "missing.log", 0) == {"count": 0, "lines": []}
    assert problem_line("Traceback (most recent call last):") and not problem_line("INFO all good")


def test_the_configs_load_with_five_rules_for_ruled_and_a_judge_when_on(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump({**overhead_config(1, url), "port": 8000}))
    config = load_config(path)
    assert len(config.policies) == len(RULED_POLICIES) == 5
    assert {p.kind for p in config.policies} == {"tools", "guard", "conversation"}
    assert all(p.tenants == ("ruled",) for p in config.policies)
    assert {t.name for t in config.tenancy.tenants} == {"plain", "ruled"}
    path.write_text(yaml.safe_dump({**ttft_config(1, url, on=True), "port": 8000}))
    (evaluation,) = load_config(path).evaluations
    assert evaluation.sample == 1.0 and [e.kind for e in evaluation.evaluators] == ["judge", "length"]
    path.write_text(yaml.safe_dump({**ttft_config(1, url, on=False), "port": 8000}))
    assert load_config(path).evaluations == ()
