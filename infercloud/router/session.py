"""session: the same session key always lands on the same replica while it is in the set.

Algorithm: rendezvous (highest random weight) hashing. Each replica scores sha256(key || replica id);
the highest score wins. When a replica leaves, only its own sessions move; when one joins, only the
sessions it now wins move to it. Requests without a session key (no `user` field, no X-Session-Id
header) go to least_load. No thresholds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from infercloud.router.base import ReplicaView, RouteRequest
from infercloud.router.least_load import LeastLoad


def _score(key: str, replica_id: str) -> bytes:
    return hashlib.sha256(f"{key}\x00{replica_id}".encode()).digest()


class SessionAffinity:
    name = "session"

    def __init__(self, fallback: LeastLoad) -> None:
        self.fallback = fallback

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        if not replicas:
            return None
        if not request.session_key:  # no key, or an empty one
            return self.fallback.choose(request, replicas)
        return max(replicas, key=lambda r: _score(request.session_key, r.replica_id))
