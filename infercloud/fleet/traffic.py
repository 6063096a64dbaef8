"""Traffic: the autoscaler's feed of what gateways see of each model. Gateways write it; the controller
reads it through `observe`.

Per model: arrivals, requests held while the model has no ready replica, and the TTFT and TPOT of recent
streams. Gateways without a controller of their own report theirs (`reports_since`) to the controller's
gateway, which adds them in (`absorb`): arrivals and latencies as if seen here, requests held per gateway
(a gateway silent for `REMOTE_HELD_TTL_S` holds none). A request held for a model also calls `on_want`,
so whoever runs the controller (or links to it) starts the model at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from infercloud.contracts import SyncReport, TrafficReport

REMOTE_HELD_TTL_S = 10.0


@dataclass(frozen=True)
class TrafficSnapshot:
    """What the autoscaler reads of one model at one moment."""

    arrival_rate: float                 # requests per second over the window
    held: int                           # requests held here and at every gateway that reported lately
    ttft_p90_s: float | None
    tpot_p90_s: float | None
    last_arrival: float | None


class ModelTraffic:
    """One model's traffic, over the last `window_s` of `clock`."""

    def __init__(self, clock: Callable[[], float], window_s: float):
        self.clock = clock
        self.window_s = window_s
        self.held = 0
        self.last_arrival: float | None = None
        self._remote_held: dict[str, tuple[int, float]] = {}   # other gateway -> (held, reported at)
        self._arrivals: deque[float] = deque(maxlen=65536)
        self._ttft: deque[tuple[float, float]] = deque(maxlen=4096)
        self._tpot: deque[tuple[float, float]] = deque(maxlen=4096)

    def arrived(self) -> None:
        self.last_arrival = self.clock()
        self._arrivals.append(self.last_arrival)

    def stream_done(self, ttft_s: float | None, tpot_s: float | None) -> None:
        now = self.clock()
        if ttft_s is not None:
            self._ttft.append((now, ttft_s))
        if tpot_s is not None:
            self._tpot.append((now, tpot_s))

    def snapshot(self) -> TrafficSnapshot:
        now = self.clock()
        while self._arrivals and self._arrivals[0] < now - self.window_s:
            self._arrivals.popleft()
        remote = sum(n for n, at in self._remote_held.values() if at >= now - REMOTE_HELD_TTL_S)
        return TrafficSnapshot(len(self._arrivals) / self.window_s, self.held + remote,
                               self._p90(self._ttft, now), self._p90(self._tpot, now), self.last_arrival)

    def _p90(self, samples: deque[tuple[float, float]], now: float) -> float | None:
        values = sorted(v for t, v in samples if t >= now - self.window_s)
        return values[min(len(values) - 1, int(0.9 * len(values)))] if values else None

    def report_since(self, t: float) -> TrafficReport:
        return TrafficReport(arrivals=sum(1 for a in self._arrivals if a > t), held=self.held,
                             ttft=tuple(v for at, v in self._ttft if at > t),
                             tpot=tuple(v for at, v in self._tpot if at > t))

    def absorb(self, gateway_id: str, report: TrafficReport) -> None:
        now = self.clock()
        for _ in range(min(report.arrivals, self._arrivals.maxlen)):
            self._arrivals.append(now)
        if report.arrivals:
            self.last_arrival = now
        self._ttft.extend((now, v) for v in report.ttft)
        self._tpot.extend((now, v) for v in report.tpot)
        self._remote_held[gateway_id] = (report.held, now)


class Traffic:
    """Every model's traffic. Gateways call `arrived`, `holding`/`released`, `stream_done` and `want`; the
    controller calls `observe`; a linked gateway sends `reports_since`, the controller `absorb`s them."""

    def __init__(self, clock: Callable[[], float], window_s: float = 30.0):
        self.clock = clock
        self.window_s = window_s
        self.on_want: Callable[[str], None] | None = None   # the controller's wake, or a link's want
        self.on_stream_done: Callable[[str, float | None, float | None], None] | None = None  # gateway metrics
        self._models: dict[str, ModelTraffic] = {}

    def _of(self, model: str) -> ModelTraffic:
        if model not in self._models:
            self._models[model] = ModelTraffic(self.clock, self.window_s)
        return self._models[model]

    # -- written by gateways -------------------------------------------------------------------------
    def arrived(self, model: str) -> None:
        self._of(model).arrived()

    def held(self, model: str) -> int:
        """Requests this gateway holds now for `model`."""
        return self._of(model).held

    def holding(self, model: str) -> None:
        """A request waits for a ready replica of `model`: count it, and ask for the model at once."""
        self._of(model).held += 1
        self.want(model)

    def released(self, model: str) -> None:
        self._of(model).held -= 1

    def want(self, model: str) -> None:
        if self.on_want is not None:
            self.on_want(model)

    def stream_done(self, model: str, ttft_s: float | None, tpot_s: float | None) -> None:
        """A stream through this gateway finished (other gateways' come in through `absorb`)."""
        self._of(model).stream_done(ttft_s, tpot_s)
        if self.on_stream_done is not None:
            self.on_stream_done(model, ttft_s, tpot_s)

    # -- read by the controller ----------------------------------------------------------------------
    def observe(self, model: str) -> TrafficSnapshot:
        return self._of(model).snapshot()

    def latencies(self, model: str) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """`model`'s recent streams, oldest first: (clock time, TTFT) and (clock time, TPOT), up to 4096 each
        (this gateway's and those reported to it), for the dashboard's plots."""
        traffic = self._of(model)
        return list(traffic._ttft), list(traffic._tpot)

    # -- between gateways ----------------------------------------------------------------------------
    def reports_since(self, t: float, models: list[str]) -> dict[str, TrafficReport]:
        return {m: self._of(m).report_since(t) for m in models}

    def absorb(self, report: SyncReport, models: set[str]) -> None:
        for model, traffic in report.traffic.items():
            if model in models:
                self._of(model).absorb(report.gateway_id, traffic)
