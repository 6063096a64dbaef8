"""HTTP load generator: metric derivation on synthetic timelines, and a smoke run against a real server."""

from __future__ import annotations

import asyncio

import pytest

from infercloud.bench.http_client import ClosedLoop, LoadResult, StreamRecord, Target, run_load_sync
from infercloud.bench.workloads import w1_requests

VOCAB = 49152


def make_record(request_id: str = "r", send_s: float = 0.0, content: tuple[float, ...] = (),
                last_byte_s: float | None = None, completion_tokens: int | None = None,
                error: str | None = None) -> StreamRecord:
    return StreamRecord(request_id, num_prompt_tokens=8, send_s=send_s, content_times_s=list(content),
                        last_byte_s=last_byte_s, completion_tokens=completion_tokens, error=error)


# -- metric derivation ---------------------------------------------------------------------------------
def test_one_request_ttft_tpot_itl_e2el():
    r = make_record(send_s=10.0, content=(10.5, 10.7, 11.0, 11.5), last_byte_s=11.6, completion_tokens=4)
    assert r.ttft_s == pytest.approx(0.5)
    assert r.e2el_s == pytest.approx(1.6)
    assert r.tpot_s == pytest.approx((1.6 - 0.5) / 3)
    assert r.itls_s == pytest.approx([0.2, 0.3, 0.5])


def test_one_token_output_has_no_tpot_and_no_itl():
    r = make_record(send_s=0.0, content=(0.3,), last_byte_s=0.35, completion_tokens=1)
    assert r.ttft_s == pytest.approx(0.3)
    assert r.tpot_s is None
    assert r.itls_s == []
    result = LoadResult(wall_s=1.0, records=[r]).to_json()
    assert result["tpot_s"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert result["itl_s"]["mean"] is None
    assert result["ttft_s"]["mean"] == pytest.approx(0.3)


def test_tpot_uses_token_count_not_chunk_count():
    # 5 tokens arrived in 3 chunks (a multi-byte character held back two of them)
    r = make_record(send_s=0.0, content=(1.0, 1.4, 2.0), last_byte_s=2.0, completion_tokens=5)
    assert r.tpot_s == pytest.approx(1.0 / 4)
    assert r.itls_s == pytest.approx([0.4, 0.6])


def test_itl_is_pooled_over_requests():
    a = make_record("a", send_s=0.0, content=(1.0, 1.1, 1.3), last_byte_s=1.3, completion_tokens=3)
    b = make_record("b", send_s=0.5, content=(2.0, 3.0), last_byte_s=3.0, completion_tokens=2)
    result = LoadResult(wall_s=4.0, records=[a, b]).to_json()
    gaps = sorted([0.1, 0.2, 1.0])
    assert result["itl_s"]["mean"] == pytest.approx(sum(gaps) / 3)
    assert result["itl_s"]["p50"] == pytest.approx(0.2)
    assert result["ttft_s"]["mean"] == pytest.approx((1.0 + 1.5) / 2)


def test_failed_requests_are_counted_apart_and_never_fast():
    ok = make_record("ok", send_s=0.0, content=(2.0, 3.0), last_byte_s=3.0, completion_tokens=2)
    http_503 = make_record("busy", send_s=0.0, last_byte_s=0.01, error="HTTP 503: overloaded")
    cut = make_record("cut", send_s=0.0, content=(0.5,), last_byte_s=0.6, completion_tokens=None,
                      error="no [DONE]: the stream ended early")
    timeout = make_record("slow", send_s=0.0, last_byte_s=600.0, error="ReadTimeout: timed out")
    for failed in (http_503, cut, timeout):
        assert not failed.ok
        assert failed.ttft_s is None and failed.e2el_s is None and failed.tpot_s is None and failed.itls_s == []
    result = LoadResult(wall_s=4.0, records=[ok, http_503, cut, timeout])
    summary = result.to_json()
    assert summary["completed"] == 1 and summary["failed"] == 3
    assert result.failures == {"HTTP 503": 1, "no [DONE]": 1, "ReadTimeout": 1}
    assert summary["ttft_s"]["p50"] == pytest.approx(2.0)   # only the successful request
    assert summary["e2el_s"]["mean"] == pytest.approx(3.0)
    assert summary["output_tokens"] == 2


def test_throughput_arithmetic():
    records = [make_record(str(i), send_s=0.0, content=(1.0, 2.0), last_byte_s=2.0, completion_tokens=10)
               for i in range(3)]
    records.append(make_record("x", error="ConnectError: refused"))
    result = LoadResult(wall_s=4.0, records=records)
    assert result.output_tokens == 30
    assert result.request_throughput == pytest.approx(3 / 4.0)
    assert result.output_throughput == pytest.approx(30 / 4.0)


def test_closed_loop_keeps_exactly_c_in_flight_and_sends_each_once():
    requests = w1_requests(7, VOCAB, seed=3, prompt_len=4, max_tokens=1)
    in_flight, most, sent = 0, 0, []

    async def send(req):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        sent.append(req.request_id)
        await asyncio.sleep(0.001 * (len(sent) % 3))
        in_flight -= 1

    asyncio.run(ClosedLoop(3).drive(requests, send))
    assert most == 3
    assert sent == [r.request_id for r in requests]
    with pytest.raises(ValueError):
        ClosedLoop(0)


# -- end to end ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_load_against_a_real_server(smollm2_server):
    requests = w1_requests(4, VOCAB, seed=5, prompt_len=16, max_tokens=8)
    warmup = w1_requests(1, VOCAB, seed=6, prompt_len=16, max_tokens=2)
    result = run_load_sync(Target(smollm2_server.url, "smollm2-135m-instruct"), requests, ClosedLoop(2), warmup)
    assert result.failures == {} and result.warmup_failures == 0
    assert sorted(r.request_id for r in result.records) == sorted(r.request_id for r in requests)
    for r in result.records:
        assert r.completion_tokens == 8
        assert 1 <= len(r.content_times_s) <= 8
        assert 0 < r.ttft_s <= r.e2el_s
        assert r.tpot_s is not None and r.tpot_s >= 0
    assert result.output_tokens == 32
    assert result.output_throughput == pytest.approx(32 / result.wall_s)
