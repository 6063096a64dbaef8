"""The router contract: what a policy sees of a request and of each replica, and how policies are named.

A policy is a small object with one method, `choose(request, replicas) -> ReplicaView | None`. It does
no I/O and reads no clock; randomness comes from the `random.Random` it is built with. The gateway
passes only routable replicas of the request's model (healthy, not draining, not already tried).
"""

from __future__ import annotations

import random
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class RouteRequest:
    model: str
    prompt_block_hashes: tuple[bytes, ...] = ()  # the engine's chained block hashes of the prompt
    num_prompt_tokens: int = 0
    session_key: str | None = None               # the `user` field or the X-Session-Id header
    tenant: str | None = None
    priority: int = 0                            # vLLM's convention, as end to end: lower is served first
    region: str | None = None                    # where it comes from: replicas there are preferred
    allowed_regions: frozenset[str] | None = None  # data residency: only replicas in these (None: any)


@dataclass(frozen=True)
class ReplicaView:
    replica_id: str
    model: str
    outstanding_requests: int = 0
    outstanding_tokens: int = 0                  # uncached prompt + max new tokens of requests in flight there
    cached_block_hashes: Container[bytes] = field(default_factory=frozenset)  # worker state + recent routing
    region: str | None = None


class RoutingPolicy(Protocol):
    name: str

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> ReplicaView | None:
        """The replica to send `request` to; None when `replicas` is empty."""


POLICY_NAMES = ("round_robin", "least_load", "prefix_aware", "session")


def make_policy(name: str, rng: random.Random | None = None, **options) -> RoutingPolicy:
    """Build the named policy (one of POLICY_NAMES); `options` are its thresholds."""
    from infercloud.router.least_load import LeastLoad
    from infercloud.router.prefix_aware import PrefixAware
    from infercloud.router.round_robin import RoundRobin
    from infercloud.router.session import SessionAffinity

    rng = rng or random.Random()
    if options and name != "prefix_aware":
        raise ValueError(f"routing policy {name!r} takes no options (got {', '.join(sorted(options))})")
    if name == "round_robin":
        return RoundRobin()
    if name == "least_load":
        return LeastLoad(rng)
    if name == "prefix_aware":
        return PrefixAware(LeastLoad(rng), **options)
    if name == "session":
        return SessionAffinity(LeastLoad(rng))
    raise ValueError(f"unknown routing policy {name!r} (known: {', '.join(POLICY_NAMES)})")
