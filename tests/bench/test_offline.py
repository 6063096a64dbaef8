"""Benchmark plumbing on tiny numbers with the real model: exact token counts and consistent metrics."""

from __future__ import annotations

import pytest

from infercloud.bench.closed_loop import RequestTiming, greedy_params, run_closed_loop, summarize
from infercloud.bench.coldstart import measure_cold_start
from infercloud.bench.hf_peer import hf_batch1_decode_tpot, hf_generate, run_hf_sequential
from infercloud.bench.workloads import MIN_TOKEN_ID, w1_requests, w4_requests

VOCAB = 49152


class InFlightRecorder:
    """Wraps an engine; records the most requests that were ever added but not yet finished."""

    def __init__(self, engine):
        self.engine = engine
        self.in_flight = 0
        self.max_in_flight = 0

    def add_request(self, *args, **kwargs):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return self.engine.add_request(*args, **kwargs)

    def step(self):
        outputs = self.engine.step()
        self.in_flight -= sum(out.finished for out in outputs)
        return outputs


def test_workloads_are_deterministic_and_shaped():
    w1 = w1_requests(3, VOCAB, seed=7, max_tokens=4)
    assert w1 == w1_requests(3, VOCAB, seed=7, max_tokens=4)
    assert all(len(r.prompt_token_ids) == 128 and r.max_tokens == 4 for r in w1)
    assert all(MIN_TOKEN_ID <= t < VOCAB for r in w1 for t in r.prompt_token_ids)
    w4 = w4_requests(VOCAB, num_prefixes=3, num_questions=2, prefix_len=32, question_len=8)
    assert [r.prefix_index for r in w4] == [0, 1, 2, 0, 1, 2]
    assert w4[0].prompt_token_ids[:32] == w4[3].prompt_token_ids[:32]
    assert w4[0].prompt_token_ids[32:] != w4[3].prompt_token_ids[32:]
    assert w4[0].prompt_token_ids[:32] != w4[1].prompt_token_ids[:32]


def test_summarize_and_tpot():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s == {"mean": 3.0, "p50": 3.0, "p90": pytest.approx(4.6), "p99": pytest.approx(4.96)}
    assert summarize([]) == {"mean": None, "p50": None, "p90": None, "p99": None}
    timing = RequestTiming("r", num_prompt_tokens=8, num_output_tokens=5, num_cached_tokens=0, ttft_s=1.0, e2e_s=3.0)
    assert timing.tpot_s == pytest.approx(0.5)
    assert RequestTiming("r", 8, 1, 0, 1.0, 1.0).tpot_s is None


def test_closed_loop_counts_and_metrics(smollm2_engine):
    requests = w1_requests(3, VOCAB, seed=1, max_tokens=4)
    recorder = InFlightRecorder(smollm2_engine)
    result = run_closed_loop(recorder, requests, concurrency=2, id_prefix="bench-test-")
    assert recorder.max_in_flight == 2
    assert sorted(r.request_id for r in result.requests) == [f"bench-test-w1-{i}" for i in range(3)]
    assert all(r.num_output_tokens == 4 and r.num_prompt_tokens == 128 for r in result.requests)
    assert result.output_tokens == 12
    assert result.output_throughput == pytest.approx(12 / result.wall_s)
    for r in result.requests:
        assert 0 < r.ttft_s <= r.e2e_s <= result.wall_s
        assert r.tpot_s == pytest.approx((r.e2e_s - r.ttft_s) / 3)
    summary = result.to_json()
    assert summary["num_requests"] == 3 and summary["output_tokens"] == 12
    assert not smollm2_engine.has_unfinished_requests()


def test_hf_peer_counts_and_matches_engine(smollm2_engine, hf_smollm2):
    requests = w1_requests(2, VOCAB, seed=2, max_tokens=4)
    result = run_hf_sequential(hf_smollm2, requests)
    assert result.output_tokens == 8 and len(result.request_e2e_s) == 2
    assert result.output_throughput == pytest.approx(8 / result.wall_s)
    engine_out = smollm2_engine.generate([r.prompt_token_ids for r in requests[:1]],
                                         greedy_params(4))
    assert engine_out[0].outputs[0].token_ids == hf_generate(hf_smollm2, requests[0].prompt_token_ids, 4)
    tpot = hf_batch1_decode_tpot(hf_smollm2, requests[0].prompt_token_ids, 4)
    assert tpot["decode_tok_s"] == pytest.approx(1 / tpot["tpot_s"])


def test_cold_start_child_reports_a_first_token(smollm2_dir):
    run = measure_cold_start(smollm2_dir)
    assert isinstance(run["token_id"], int)
    assert run["total_s"] >= run["import_s"] + run["load_s"] + run["first_token_s"]
    assert run["other_s"] >= 0
