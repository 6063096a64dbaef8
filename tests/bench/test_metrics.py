"""Serving metrics on synthetic timelines: summary arithmetic, goodput against SLOs, SLO parsing."""

from __future__ import annotations

import pytest

from infercloud.bench.metrics import LoadResult, Slo, StreamRecord, parse_slo


def make_record(request_id: str = "r", send_s: float = 0.0, content: tuple[float, ...] = (),
                last_byte_s: float | None = None, completion_tokens: int | None = None, error: str | None = None,
                num_prompt_tokens: int = 8) -> StreamRecord:
    return StreamRecord(request_id, num_prompt_tokens, send_s, list(content), last_byte_s, completion_tokens, error)


def ok(request_id: str, ttft: float, tpot: float, tokens: int, send_s: float = 0.0) -> StreamRecord:
    """A successful request with a first chunk at `ttft` and one chunk per later token `tpot` apart."""
    content = tuple(send_s + ttft + i * tpot for i in range(tokens))
    return make_record(request_id, send_s, content, content[-1], tokens)


def test_summary_latencies_and_throughputs_are_consistent():
    records = [ok("a", ttft=0.1, tpot=0.05, tokens=5), ok("b", ttft=0.3, tpot=0.02, tokens=3, send_s=1.0),
               make_record("x", send_s=0.5, last_byte_s=0.6, error="HTTP 503: busy")]
    s = LoadResult(wall_s=2.0, records=records).summary()
    assert (s["num_requests"], s["completed"], s["failed"], s["failures"]) == (3, 2, 1, {"HTTP 503": 1})
    assert (s["input_tokens"], s["output_tokens"]) == (16, 8)
    assert s["request_throughput_req_s"] == pytest.approx(2 / 2.0)
    assert s["output_throughput_tok_s"] == pytest.approx(8 / 2.0)
    assert s["total_token_throughput_tok_s"] == pytest.approx(24 / 2.0)
    assert s["ttft_s"]["mean"] == pytest.approx(0.2)
    assert s["tpot_s"]["mean"] == pytest.approx((0.05 + 0.02) / 2)
    assert s["itl_s"]["mean"] == pytest.approx((4 * 0.05 + 2 * 0.02) / 6)   # 6 gaps pooled
    assert s["e2el_s"]["p50"] == pytest.approx((0.3 + 0.34) / 2)
    assert s["slo"] is None and s["goodput_req_s"] is None and s["good_requests"] is None


def test_goodput_counts_only_completed_requests_meeting_every_slo():
    records = [ok("fast", ttft=0.1, tpot=0.01, tokens=4),
               ok("slow-first-token", ttft=3.0, tpot=0.01, tokens=4),
               ok("slow-decode", ttft=0.1, tpot=0.5, tokens=4),
               ok("one-token", ttft=0.2, tpot=0.0, tokens=1),                    # no TPOT: meets any TPOT SLO
               make_record("failed-fast", send_s=0.0, last_byte_s=0.001, error="ConnectError: refused")]
    result = LoadResult(wall_s=4.0, records=records)
    slo = Slo(ttft_ms=2000, tpot_ms=200)
    assert [slo.is_met_by(r) for r in records] == [True, False, False, True, False]
    assert result.num_good(slo) == 2
    assert result.goodput(slo) == pytest.approx(2 / 4.0)
    summary = result.summary(slo)
    assert summary["good_requests"] == 2 and summary["goodput_req_s"] == pytest.approx(0.5)
    assert summary["slo"] == {"ttft_ms": 2000, "tpot_ms": 200}
    assert result.num_good(Slo(e2el_ms=500)) == 2                            # fast (0.13 s), one-token (0.2 s)
    assert result.num_good(Slo()) == 4                                       # no objective: every completed one


def test_slo_edges_are_inclusive():
    r = ok("r", ttft=2.0, tpot=0.2, tokens=3)
    assert Slo(ttft_ms=2000, tpot_ms=200).is_met_by(r)
    assert not Slo(ttft_ms=1999).is_met_by(r)


def test_parse_slo():
    assert parse_slo("ttft_ms=2000,tpot_ms=200") == Slo(ttft_ms=2000.0, tpot_ms=200.0)
    assert parse_slo(" e2el_ms = 1500 ") == Slo(e2el_ms=1500.0)
    assert parse_slo("") == Slo()
    for bad in ("ttft=2000", "ttft_ms", "ttft_ms=fast", "tpot_ms=0", "tpot_ms=-5"):
        with pytest.raises(ValueError):
            parse_slo(bad)


def test_request_rows_carry_send_offsets_and_timelines():
    records = [ok("a", ttft=0.1, tpot=0.05, tokens=3, send_s=10.5)]
    rows = LoadResult(wall_s=1.0, records=records, start_s=10.0).request_rows()
    assert rows[0]["send_offset_s"] == pytest.approx(0.5)
    assert rows[0]["chunk_offsets_s"] == pytest.approx([0.1, 0.15, 0.2])
    assert rows[0]["completion_tokens"] == 3 and rows[0]["error"] is None
    assert LoadResult(wall_s=1.0, records=records).to_json()["requests"][0]["request_id"] == "a"
