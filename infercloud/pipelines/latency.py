"""LatencyBook: what each pipeline stage is expected to take, from its recent durations; a stage expected to
run out of its time is not started (pipelines/runner.py says why)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LatencyBook:
    """What each stage (by "pipeline/stage") is expected to take: an exponential average of its durations
    (weight `alpha` on the newest), lowered by `relief` each time a stage is refused on it."""

    alpha: float = 0.2
    relief: float = 0.9
    expected_s: dict[str, float] = field(default_factory=dict)

    def expected(self, key: str) -> float | None:
        return self.expected_s.get(key)

    def observe(self, key: str, seconds: float) -> None:
        old = self.expected_s.get(key)
        self.expected_s[key] = seconds if old is None else (1 - self.alpha) * old + self.alpha * seconds

    def refused(self, key: str) -> None:
        if key in self.expected_s:
            self.expected_s[key] *= self.relief


def expected_to_miss(book: LatencyBook, key: str, timeout_s: float) -> float | None:
    """The stage's expected duration when it is more than its timeout (do not start it), else None."""
    expected = book.expected(key)
    if expected is not None and expected > timeout_s:
        book.refused(key)
        return expected
    return None
