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

Regions: `region_slots` splits a model's replica count over its regions; the controller starts each
slot's workers on that region's nodes, or, when the region has no live node, in the nearest region that
has one (`region_for`; router/regions.py orders regions by latency). `fill_slot` is the one stand-in rule
for a slot, used for a model's dedicated replicas and for a pool's workers alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from infercloud.cluster.base import NodeView
from infercloud.router.regions import RegionMap


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


class SlotMember(Protocol):
    region: str | None            # where it runs
    started_at: float

    @property
    def is_ready(self) -> bool: ...


Member = TypeVar("Member", bound=SlotMember)


def fill_slot(members: Sequence[Member], count: int, region: str | None, nodes: Sequence[NodeView],
              starting: int) -> tuple[list[Member], int]:
    """For one slot of `count` in `region` (None: anywhere), given the members filling it now and the
    starts in progress: the members to retire and how many to start.

    When the region has a live node (or there is no inventory), members run there ("home"); the ones that
    had to start elsewhere (stand-ins, while it had no node) keep serving until as many home members are
    ready, then retire. While it has no node, stand-ins run wherever is nearest. Beyond the count, the
    newest go first.
    """
    members = sorted(members, key=lambda m: m.started_at)
    if region is None or not nodes or region in {n.region for n in nodes}:
        home = [m for m in members if region is None or m.region == region]
        away = [m for m in members if m not in home]
        ready = sum(m.is_ready for m in home)
        return home[count:] + away[max(count - ready, 0):], max(count - len(home) - starting, 0)
    return members[count:], max(count - len(members) - starting, 0)


def region_for(wanted: str | None, nodes: Sequence[NodeView], regions: RegionMap) -> str | None:
    """Where a worker meant for region `wanted` starts: there, or the nearest region with a live node."""
    if wanted is None or not nodes:
        return wanted
    live = {n.region for n in nodes if n.region is not None}
    return wanted if wanted in live else regions.nearest(wanted, live)


def device_for(device: str, region: str | None, nodes: Sequence[NodeView]) -> tuple[str, int]:
    """The device a worker's models run on and the GPUs it reserves ("auto": cuda if its nodes have one)."""
    if device == "auto" and any(n.num_gpus and (region is None or n.region == region) for n in nodes):
        return "cuda", 1
    return device, 1 if device == "cuda" else 0
