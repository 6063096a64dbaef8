"""The autoscaling policy: a pure `decide(ctx) -> ScalingDecision` per model, from recent observations.

Algorithm, for one model at time `now`, over observations (oldest first) taken every few seconds:
  1. Load: each observation asks for ceil((running + queued) / target_ongoing_requests) replicas, where
     queued counts requests waiting in engines and held at the gateway (as Ray Serve's
     target_ongoing_requests).
  2. SLO: an observation whose TTFT p90 or TPOT p90 is over its target asks for one replica more than
     there were when it was taken, whatever its load says.
  3. Scale up once every observation of the last `upscale_delay_s` asks for more than the current
     count (a lone spike does not), to the smallest of those asks; at most `max_step` at a time.
  4. Scale down only when every observation of the last `downscale_delay_s` asks for fewer, to the
     largest of those asks (so a short dip, or load oscillating faster than the window, holds the
     count); at most `max_step` at a time, never below `min_replicas` or 1. A controller that has
     not yet observed for that long does not scale down.
  5. To zero: with `min_replicas` 0, once no request has arrived for `idle_to_zero_s` and nothing is
     running or queued. From zero: any queued (held) request asks for one replica at once.
Counts are clamped to [min_replicas, max_replicas]. No I/O, no clock of its own: tests feed it
recorded series and a fake `now`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from infercloud.config import AutoscalingSpec


@dataclass(frozen=True)
class Observation:
    time: float
    replicas: int                 # replicas serving when it was taken
    running: int                  # requests running in engines
    queued: int                   # waiting in engines plus held at the gateway
    ttft_p90_s: float | None = None
    tpot_p90_s: float | None = None
    kv_usage: float | None = None  # KV blocks in use / total, on its fullest replica
    arrival_rate: float | None = None  # requests per second arriving at the gateway (for reports)


@dataclass(frozen=True)
class ScalingContext:
    model: str
    spec: AutoscalingSpec
    now: float
    current_replicas: int
    observations: Sequence[Observation]   # oldest first; the policy looks at its windows only
    last_arrival_time: float | None       # None: no request since the controller started


@dataclass(frozen=True)
class ScalingDecision:
    target_replicas: int
    reason: str


def wanted(obs: Observation, spec: AutoscalingSpec) -> int:
    """Replicas one observation asks for (steps 1 and 2), before clamping."""
    by_load = math.ceil((obs.running + obs.queued) / spec.target_ongoing_requests)
    breach = (spec.ttft_slo_s is not None and obs.ttft_p90_s is not None and obs.ttft_p90_s > spec.ttft_slo_s) or \
        (spec.tpot_slo_s is not None and obs.tpot_p90_s is not None and obs.tpot_p90_s > spec.tpot_slo_s) or \
        (obs.kv_usage is not None and obs.kv_usage > spec.max_kv_usage)
    return max(by_load, obs.replicas + 1) if breach else by_load


def decide(ctx: ScalingContext) -> ScalingDecision:
    spec, current = ctx.spec, ctx.current_replicas
    latest = ctx.observations[-1] if ctx.observations else None
    if current == 0:
        if latest is not None and latest.queued > 0:
            return ScalingDecision(_clamp(1, spec), "requests are waiting for a model with no replica")
        return ScalingDecision(_clamp(0, spec), "idle at zero")
    if _idle(ctx):
        return ScalingDecision(0, f"no request for {spec.idle_to_zero_s:g} s")
    up = _window(ctx, spec.upscale_delay_s)
    if up and all(wanted(o, spec) > current for o in up):
        target = min(current + spec.max_step, min(wanted(o, spec) for o in up))
        if _clamp(target, spec) > current:
            return ScalingDecision(_clamp(target, spec), _why_up(up[-1], spec))
    down = _window(ctx, spec.downscale_delay_s)
    seen_long_enough = bool(ctx.observations) and ctx.observations[0].time <= ctx.now - spec.downscale_delay_s
    if seen_long_enough and all(wanted(o, spec) < current for o in down):
        target = max(current - spec.max_step, max(wanted(o, spec) for o in down), 1)
        if _clamp(target, spec) < current:
            return ScalingDecision(_clamp(target, spec), f"load below {current} replicas for "
                                                         f"{spec.downscale_delay_s:g} s")
    return ScalingDecision(_clamp(current, spec), "steady")


def _window(ctx: ScalingContext, seconds: float) -> list[Observation]:
    """The observations of the last `seconds` (at least the latest one)."""
    recent = [o for o in ctx.observations if o.time >= ctx.now - seconds]
    return recent or list(ctx.observations[-1:])


def _idle(ctx: ScalingContext) -> bool:
    spec = ctx.spec
    if spec.min_replicas > 0 or spec.idle_to_zero_s is None:
        return False
    latest = ctx.observations[-1] if ctx.observations else None
    busy = latest is not None and (latest.running or latest.queued)
    quiet_since = ctx.last_arrival_time if ctx.last_arrival_time is not None else \
        (ctx.observations[0].time if ctx.observations else ctx.now)
    return not busy and ctx.now - quiet_since >= spec.idle_to_zero_s


def _clamp(n: int, spec: AutoscalingSpec) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, n))


def _why_up(obs: Observation, spec: AutoscalingSpec) -> str:
    if spec.ttft_slo_s is not None and obs.ttft_p90_s is not None and obs.ttft_p90_s > spec.ttft_slo_s:
        return f"TTFT p90 {obs.ttft_p90_s:.2f} s over its SLO {spec.ttft_slo_s:g} s"
    if spec.tpot_slo_s is not None and obs.tpot_p90_s is not None and obs.tpot_p90_s > spec.tpot_slo_s:
        return f"TPOT p90 {obs.tpot_p90_s * 1e3:.0f} ms over its SLO {spec.tpot_slo_s * 1e3:.0f} ms"
    if obs.kv_usage is not None and obs.kv_usage > spec.max_kv_usage:
        return f"KV cache {obs.kv_usage:.0%} full"
    return f"{obs.running + obs.queued} requests for {obs.replicas} replicas"
