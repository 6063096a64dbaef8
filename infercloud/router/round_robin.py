"""round_robin: replicas in turn.

Algorithm: keep a counter; send request k to replica k mod N of the replicas offered (sorted by id, so
the order is stable while the set changes). No thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

from infercloud.router.base import ReplicaView, RouteRequest


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        if not replicas:
            return None
        ordered = sorted(replicas, key=lambda r: r.replica_id)
        chosen = ordered[self._next % len(ordered)]
        self._next += 1
        return chosen
