"""Placement: which shared worker of a pool gets a replica of a model. A pure function of worker views.

Algorithm, for a model that needs `need_bytes` (weights + KV) on a pool of workers:
  1. Only ready workers that do not already host the model (replicas of one model are spread, so
     losing a worker never loses them all).
  2. Pack: among workers with that much free memory, the one left with the least free memory after
     placing it (best fit), so large holes stay open for large models.
  3. Else make room: among workers where unloading idle, unpinned models would free enough, the one
     holding the pool's coldest idle model (fewest recent requests, decayed: worker.py), then the least
     recently used, then the one with the most free memory already (it unloads the least). The worker
     itself picks the victims the same way.
  4. Else None: the pool has no room now (busy or pinned models fill it).
Ties go to the worker hosting fewer models, then to the lower id, so placement is deterministic.

Regions (dedicated workers): `region_slots` splits a model's replica count over its regions; the
controller starts each slot's workers on that region's nodes, or, when the region has no live node,
in the nearest region that has one (router/regions.py orders them by latency).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerView:
    worker_id: str
    budget_bytes: int
    used_bytes: int
    hosting: frozenset[str]          # models loaded or loading there
    evictable_bytes: int             # held by idle, unpinned models: what unloading could free
    is_ready: bool = True
    oldest_idle_s: float = 0.0       # how long its least recently used idle, unpinned model has been idle
    coldest_idle_heat: float = 0.0   # the lowest heat (decayed recent requests) of its idle, unpinned models

    @property
    def free_bytes(self) -> int:
        return self.budget_bytes - self.used_bytes


def place(model: str, need_bytes: int, workers: Sequence[WorkerView]) -> WorkerView | None:
    candidates = [w for w in workers if w.is_ready and model not in w.hosting]
    fits = [w for w in candidates if w.free_bytes >= need_bytes]
    if fits:
        return min(fits, key=lambda w: (w.free_bytes - need_bytes, len(w.hosting), w.worker_id))
    roomy = [w for w in candidates if w.free_bytes + w.evictable_bytes >= need_bytes]
    if roomy:
        return min(roomy, key=lambda w: (w.coldest_idle_heat, -w.oldest_idle_s, -w.free_bytes, len(w.hosting),
                                         w.worker_id))
    return None


def region_slots(regions: dict[str, int] | None, total: int) -> dict[str | None, int]:
    """How many of a model's `total` replicas go to each region: its configured counts when they add up
    to the total, else shared out in proportion to them (largest remainder; ties to the region listed
    first). A model without regions has one slot, None: anywhere."""
    if not regions or sum(regions.values()) == 0:
        return {None: total}
    weight = sum(regions.values())
    if weight == total:
        return dict(regions)
    exact = {r: total * n / weight for r, n in regions.items()}
    slots = {r: int(share) for r, share in exact.items()}
    order = sorted(regions, key=lambda r: -(exact[r] - slots[r]))   # stable: listed order breaks ties
    for region in order[:total - sum(slots.values())]:
        slots[region] += 1
    return slots
