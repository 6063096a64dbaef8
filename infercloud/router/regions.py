"""regions: which replicas a request may go to, by region: its own first, then the nearest with room.

Algorithm, for a request from region `home` (the x-infercloud-region header, else the tenant's home
region, else the gateway's region), bound to `allowed` regions (a tenant's data residency) or not:
  1. Replicas outside `allowed` are never offered: a bound request is served in its regions or not at all.
  2. Without a home region every remaining replica is offered (no preference).
  3. Regions are ordered by distance from home: home itself, then the others by the configured latency
     (a latency given in either direction counts for both; unknown latencies come last, ties by name;
     replicas whose node has no region label come after every named region).
  4. The first region in that order with a replica that is not full gets the request: the routing
     policy then picks among that region's replicas that are not full. A replica is full when it has
     `spillover_outstanding` requests in flight from this gateway (default 32: a batch's worth).
  5. When every replica is full, the home-most region's replicas are offered (queueing at home beats
     crossing an ocean to queue there too).
No clock, no I/O; the controller uses `RegionMap.nearest` to pick where a replica goes when its own
region has no node left.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from infercloud.router.base import ReplicaView


@dataclass(frozen=True)
class RegionMap:
    """Latencies between regions, in milliseconds; symmetric, 0 to itself, inf when unknown."""

    latency_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def from_specs(cls, regions: Iterable) -> "RegionMap":
        """From the config's RegionSpecs (each with `name` and `latency_ms` to others)."""
        latency: dict[tuple[str, str], float] = {}
        for region in regions:
            for other, ms in region.latency_ms.items():
                latency[(region.name, other)] = latency[(other, region.name)] = float(ms)
        return cls(latency)

    def distance(self, a: str | None, b: str | None) -> float:
        if a is not None and a == b:
            return 0.0
        if a is None or b is None:
            return math.inf
        return self.latency_ms.get((a, b), math.inf)

    def order(self, home: str, regions: Iterable[str | None]) -> list[str | None]:
        """`regions` nearest first from `home` (unlabelled last)."""
        return sorted(set(regions), key=lambda r: (r is None, self.distance(home, r), r or ""))

    def nearest(self, home: str | None, regions: Iterable[str | None]) -> str | None:
        """The nearest of `regions` to `home` (home itself if it is there); None when there are none."""
        ordered = self.order(home, regions) if home is not None else \
            sorted(set(regions), key=lambda r: (r is None, r or ""))
        return ordered[0] if ordered else None


def regional_candidates(replicas: Sequence[ReplicaView], home: str | None, allowed: frozenset[str] | None,
                        regions: RegionMap, full_at: int) -> list[ReplicaView]:
    """The replicas the routing policy may choose from (empty: none in any region allowed)."""
    offered = [r for r in replicas if allowed is None or r.region in allowed]
    if home is None or not offered:
        return offered
    by_region: dict[str | None, list[ReplicaView]] = {}
    for replica in offered:
        by_region.setdefault(replica.region, []).append(replica)
    ordered = regions.order(home, by_region)
    for region in ordered:
        roomy = [r for r in by_region[region] if r.outstanding_requests < full_at]
        if roomy:
            return roomy
    return by_region[ordered[0]]
