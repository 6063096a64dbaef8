"""The autoscaling policy on recorded load series with a fake clock: decide() is pure, so a small loop
plays each series, applies every decision at once, and the tests read the replica counts it went through."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infercloud.controller.autoscaler import AutoscalingSpec, Observation, ScalingContext, decide, wanted

TICK_S = 5.0
SLOTS = 8  # requests a replica runs at once in this simulation; the rest queue


def play(spec: AutoscalingSpec, load: Callable[[float], int], seconds: float, start_replicas: int = 1,
         ttft: Callable[[float, int], float | None] = lambda t, n: None,
         arrivals: Callable[[float], bool] | None = None) -> list[tuple[float, int, str]]:
    """Run `seconds` of load (requests in the system at time t); returns (time, replicas, reason) per tick."""
    replicas, history, last_arrival, trace = start_replicas, [], None, []
    for i in range(int(seconds / TICK_S) + 1):
        now = i * TICK_S
        requests = load(now)
        if (arrivals or (lambda t: load(t) > 0))(now):
            last_arrival = now
        running = min(requests, replicas * SLOTS)
        history.append(Observation(now, replicas, running, requests - running, ttft(now, replicas)))
        decision = decide(ScalingContext("m", spec, now, replicas, history[-64:], last_arrival))
        replicas = decision.target_replicas
        trace.append((now, replicas, decision.reason))
    return trace


def counts(trace) -> list[int]:
    return [n for _, n, _ in trace]


def changes(trace) -> int:
    c = counts(trace)
    return sum(a != b for a, b in zip(c, c[1:]))


SPEC = AutoscalingSpec(min_replicas=1, max_replicas=6, target_ongoing_requests=8, upscale_delay_s=0,
                       downscale_delay_s=60, max_step=2)


def test_each_observation_asks_for_load_over_target_and_one_more_on_an_slo_breach():
    spec = AutoscalingSpec(max_replicas=9, target_ongoing_requests=8, ttft_slo_s=1.0, tpot_slo_s=0.1)
    assert wanted(Observation(0, 2, 16, 1), spec) == 3
    assert wanted(Observation(0, 2, 4, 0), spec) == 1
    assert wanted(Observation(0, 2, 4, 0, ttft_p90_s=1.5), spec) == 3     # load says 1, the SLO says 2 + 1
    assert wanted(Observation(0, 2, 4, 0, tpot_p90_s=0.05), spec) == 1


def test_scales_up_with_load_at_most_max_step_at_a_time_up_to_max():
    trace = play(SPEC, lambda t: 0 if t < 20 else 60, 120)
    c = counts(trace)
    assert c[:4] == [1] * 4
    assert c[4:8] == [3, 5, 6, 6]  # from t=20 s, 60 requests want 8 replicas: +2, +2, then the max of 6
    assert all(b - a <= 2 for a, b in zip(c, c[1:]))


def test_scales_up_on_an_slo_breach_even_at_low_load():
    spec = AutoscalingSpec(min_replicas=1, max_replicas=4, target_ongoing_requests=8, ttft_slo_s=0.5,
                           downscale_delay_s=60)
    slow = lambda t, n: 2.0 if n < 3 else 0.3  # noqa: E731 - TTFT p90 misses its SLO with fewer than 3 replicas
    trace = play(spec, lambda t: 4, 60, ttft=slow)
    assert counts(trace)[:3] == [2, 3, 3]  # from 1: one more per breaching observation
    assert "TTFT p90 2.00 s over its SLO" in trace[0][2]
    assert changes(trace) == 1  # and it holds there: with 3 replicas the SLO is met, scaling in waits


def test_upscale_delay_ignores_a_lone_spike():
    spec = AutoscalingSpec(min_replicas=1, max_replicas=6, upscale_delay_s=10, downscale_delay_s=60)
    spike = play(spec, lambda t: 40 if t == 30 else 4, 90)
    assert set(counts(spike)) == {1}
    sustained = play(spec, lambda t: 40 if t >= 30 else 4, 90)
    assert counts(sustained)[8] > 1  # 10 s of the same ask (3 observations): then it scales


def test_holds_through_short_dips_and_scales_in_after_the_window():
    high, dip = 30, 2
    trace = play(SPEC, lambda t: dip if 100 <= t < 130 or t >= 200 else high, 330, start_replicas=4)
    c = counts(trace)
    assert set(c[:int(200 / TICK_S)]) == {4}               # a 30 s dip is shorter than the 60 s window
    assert c[int(255 / TICK_S)] == 4 and c[int(260 / TICK_S)] == 2   # 60 s of low load: -2...
    assert c[int(265 / TICK_S)] == 1 == c[-1]             # ...then down to what the load asks
    assert "for 60 s" in trace[int(260 / TICK_S)][2]


def test_no_flapping_under_oscillating_load():
    trace = play(SPEC, lambda t: 40 if int(t // 20) % 2 == 0 else 3, 600)  # high and low every 20 s
    assert changes(trace) <= 3  # it climbs to what the peaks need and stays
    assert counts(trace)[-1] == 5


def test_scale_to_zero_after_idle_and_back_when_requests_wait():
    spec = AutoscalingSpec(min_replicas=0, max_replicas=3, downscale_delay_s=30, idle_to_zero_s=60)
    trace = play(spec, lambda t: 5 if t < 20 or t >= 200 else 0, 260)
    c = counts(trace)
    assert c[int(70 / TICK_S)] == 1 and c[int(75 / TICK_S)] == 0     # last arrival at 15 s, idle 60 s after
    assert "no request for 60 s" in trace[int(75 / TICK_S)][2]
    assert c[int(195 / TICK_S)] == 0
    assert c[int(200 / TICK_S)] == 1                                 # a held request brings one back at once
    assert "no replica" in trace[int(200 / TICK_S)][2]


def test_never_to_zero_with_min_replicas_or_without_an_idle_time():
    for spec in (AutoscalingSpec(min_replicas=1, max_replicas=2, idle_to_zero_s=10),
                 AutoscalingSpec(min_replicas=0, max_replicas=2, idle_to_zero_s=None, downscale_delay_s=10)):
        assert min(counts(play(spec, lambda t: 0, 300))) == 1


def test_a_controller_that_just_started_does_not_scale_in():
    trace = play(SPEC, lambda t: 0, 55, start_replicas=3)
    assert set(counts(trace)) == {3}


def test_spec_rejects_impossible_bounds():
    with pytest.raises(ValueError):
        AutoscalingSpec(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError):
        AutoscalingSpec(max_step=0)


def test_a_full_kv_cache_asks_for_one_more_replica():
    spec = AutoscalingSpec(min_replicas=1, max_replicas=3, target_ongoing_requests=100, max_kv_usage=0.9)
    full = Observation(0.0, replicas=1, running=4, queued=0, kv_usage=0.97)
    assert wanted(full, spec) == 2 and wanted(Observation(0.0, 1, 4, 0, kv_usage=0.5), spec) == 1
    decision = decide(ScalingContext("m", spec, 0.0, 1, [full], 0.0))
    assert decision.target_replicas == 2 and "KV cache 97% full" in decision.reason
