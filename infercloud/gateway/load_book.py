"""LoadBook: what this gateway has in flight on each replica, keyed by replica id; the gateway its only writer.

Per replica: outstanding requests and tokens (uncached prompt + max new tokens of the requests in flight
there), requests routed, the prompt block hashes recently sent there (prefix_aware routes on them beside
the ones the worker reports), and the last failure: a replica a request could not reach stays out of this
gateway's routing until the controller's next passing probe of it (its `probes_passed` moves on).
The fleet (fleet/replicas.py) says which replicas exist and whether they are ready; the book never
changes it.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from infercloud.fleet.replicas import KnownHashes, Replica, ReplicaSet
from infercloud.router.base import ReplicaView
from infercloud.router.prefix_aware import match_length


@dataclass
class Load:
    routed_hashes: KnownHashes
    outstanding_requests: int = 0
    outstanding_tokens: int = 0
    num_routed: int = 0
    failed_at_pass: int | None = None     # the replica's probes_passed when a request last failed to reach it


@dataclass(frozen=True)
class Lease:
    """One request's load on one replica, from `begin` until `end`."""

    replica_id: str
    tokens: int


@dataclass(frozen=True)
class _Either:
    """Cached on the replica: reported by its worker, or recently routed there by this gateway."""

    reported: Container[bytes]
    routed: Container[bytes]

    def __contains__(self, h: object) -> bool:
        return h in self.routed or h in self.reported


@dataclass
class LoadBook:
    fleet: ReplicaSet
    recent_routes: int = 8192             # prompt block hashes remembered per replica
    _loads: dict[str, Load] = field(default_factory=dict)

    def __len__(self) -> int:
        """Replicas it keeps an entry for."""
        return len(self._loads)

    def load(self, replica_id: str) -> Load:
        if replica_id not in self._loads:
            self._loads[replica_id] = Load(KnownHashes(self.recent_routes))
        return self._loads[replica_id]

    def is_out(self, replica: Replica) -> bool:
        """A request failed to reach it since its last passing probe."""
        failed = self.load(replica.replica_id).failed_at_pass
        return failed is not None and failed >= replica.probes_passed

    def failed(self, replica: Replica) -> None:
        self.load(replica.replica_id).failed_at_pass = replica.probes_passed

    def cached_hashes(self, replica: Replica) -> Container[bytes]:
        return _Either(replica.reported_hashes, self.load(replica.replica_id).routed_hashes)

    def view(self, replica: Replica) -> ReplicaView:
        load = self.load(replica.replica_id)
        return ReplicaView(replica.replica_id, replica.model, load.outstanding_requests, load.outstanding_tokens,
                           self.cached_hashes(replica), replica.region)

    def begin(self, replica: Replica, hashes: tuple[bytes, ...], tokens: int, block_size: int) -> Lease:
        """Count a request against the replica: its tokens less the prompt blocks the replica holds.

        A prompt whose 1024-token prefix is cached there costs the replica its question and output, not its
        whole length, so a replica serving cache hits does not look loaded to the policies.
        """
        self._forget_gone()
        load = self.load(replica.replica_id)
        lease = Lease(replica.replica_id, tokens - match_length(hashes, self.cached_hashes(replica)) * block_size)
        load.outstanding_requests += 1
        load.outstanding_tokens += lease.tokens
        load.num_routed += 1
        load.routed_hashes.add(hashes)
        return lease

    def end(self, lease: Lease) -> None:
        load = self.load(lease.replica_id)
        load.outstanding_requests -= 1
        load.outstanding_tokens -= lease.tokens

    def describe(self, replica: Replica) -> dict:
        load = self.load(replica.replica_id)
        return {"num_routed": load.num_routed, "outstanding_requests": load.outstanding_requests,
                "outstanding_tokens": load.outstanding_tokens, "known_prefix_blocks": len(load.routed_hashes)}

    def _forget_gone(self) -> None:
        """Drop idle entries of replicas that left the fleet (checked when the book has grown past it)."""
        if len(self._loads) <= 2 * len(self.fleet.all()) + 16:
            return
        alive = {r.replica_id for r in self.fleet.all()}
        for replica_id in [i for i, load in self._loads.items() if i not in alive and not load.outstanding_requests]:
            del self._loads[replica_id]
