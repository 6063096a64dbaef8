"""Replica choice: one policy per file behind `RoutingPolicy.choose(request, replicas)`."""

from infercloud.router.base import ReplicaView, RouteRequest, RoutingPolicy, make_policy

__all__ = ["ReplicaView", "RouteRequest", "RoutingPolicy", "make_policy"]
