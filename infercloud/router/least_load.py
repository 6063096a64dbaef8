"""least_load: power of two choices on outstanding tokens.

Algorithm: draw two distinct replicas at random and take the one with fewer outstanding tokens
(the gateway's count of work in flight there: each request's prompt tokens not already cached on that
replica, plus its max new tokens); ties go to fewer outstanding requests, then to the first drawn.
With one replica, that one. Two random choices keep load within a small factor of optimal without
herding every gateway onto the same idle replica.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from infercloud.router.base import ReplicaView, RouteRequest


def load_key(replica: ReplicaView) -> tuple[int, int]:
    return replica.outstanding_tokens, replica.outstanding_requests


class LeastLoad:
    name = "least_load"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        if len(replicas) <= 1:
            return replicas[0] if replicas else None
        first, second = self.rng.sample(list(replicas), 2)
        return second if load_key(second) < load_key(first) else first
