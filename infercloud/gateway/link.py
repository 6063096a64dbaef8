"""ControllerLink: a gateway that runs no controller mirrors the replica set of the gateway that does.

Several gateways (one per region, say) share one controller: the first runs it (`infercloud serve` with
a `cluster` section), the others name it (`gateway.controller_url: http://host:port`). Every
`sync_interval_s`, and at once when a request waits for a model with no ready replica, a linked gateway
POSTs to the controller's `/internal/sync` what it saw since its last report (arrivals, requests held,
stream TTFT/TPOT per model: the autoscaler adds them to its own) and the models it waits for (the
controller starts them now), and gets back every replica with its state, URL and region.
Replicas it did not have are added, gone ones removed, the others updated in place, so its own load
counters and prefix memory carry on. A replica this gateway could not reach stays out of its routing
for `FAILED_HOLD_S` even when the controller still calls it ready: its probes may not have seen it yet.
When the controller cannot be reached, the gateway keeps routing on the last set it had.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from infercloud.controller.replicas import Replica, ReplicaSet, ReplicaState
from infercloud.internal_token import bearer

log = logging.getLogger("infercloud.gateway")

FAILED_HOLD_S = 2.0


class ControllerLink:
    def __init__(self, url: str, replicas: ReplicaSet, models: list[str], client: aiohttp.ClientSession,
                 gateway_id: str, interval_s: float, token: str, clock: Callable[[], float] = time.monotonic):
        self.url = url.rstrip("/")
        self.auth = bearer(token)        # the controller's /internal/sync is on the internal plane
        self.replicas = replicas
        self.models = models
        self.client = client
        self.gateway_id = gateway_id
        self.interval_s = interval_s
        self.clock = clock
        self.synced: dict = {}                     # the controller's targets, pool workers and nodes
        self.num_syncs = 0
        self._reported_at = clock()
        self._wants: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        replicas.on_want = self.want

    def want(self, model: str) -> None:
        self._wants.add(model)
        self._wake.set()

    def public_state(self) -> dict:
        return {**self.synced, "controller": self.url}

    async def start(self, timeout_s: float) -> None:
        """The first sync (retried until `timeout_s`), then the loop in the background."""
        deadline = self.clock() + timeout_s
        while not await self.sync():
            if self.clock() > deadline:
                raise RuntimeError(f"the controller at {self.url} did not answer /internal/sync within {timeout_s:g} s")
            await asyncio.sleep(0.5)
        self._task = asyncio.create_task(self._loop(), name="controller-link")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.sync()

    async def sync(self) -> bool:
        """One report and one copy of the replica set; False when the controller could not be reached."""
        now, wants = self.clock(), sorted(self._wants)
        report = {"gateway_id": self.gateway_id, "wants": wants,
                  "traffic": {m: self.replicas.traffic(m).since(self._reported_at) for m in self.models}}
        try:
            async with self.client.post(f"{self.url}/internal/sync", json=report, headers=self.auth,
                                        timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status == 401:
                    raise aiohttp.ClientError("401: the controller's gateway refused this gateway's internal "
                                              "token; give every gateway the same one (INFERCLOUD_INTERNAL_TOKEN)")
                if response.status != 200:
                    raise aiohttp.ClientError(f"status {response.status}")
                body = await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.warning("sync with the controller at %s failed: %r", self.url, exc)
            return False
        self._reported_at = now
        self._wants -= set(wants)
        self.apply(body.pop("replicas"))
        self.synced = body
        self.num_syncs += 1
        return True

    def apply(self, described: list[dict]) -> None:
        """Make this gateway's replica set the controller's."""
        mine = {r.replica_id: r for r in self.replicas.all()}
        for entry in described:
            replica = mine.pop(entry["replica_id"], None)
            if replica is None:
                replica = Replica(entry["replica_id"], entry["model"], entry["url"], is_external=entry["external"])
                self.replicas.add(replica)
            replica.url, replica.region, replica.last_state = entry["url"], entry.get("region"), entry.get("engine")
            state = ReplicaState(entry["state"])
            if state == ReplicaState.READY and replica.failed_at is not None and \
                    self.clock() - replica.failed_at < FAILED_HOLD_S:
                state = ReplicaState.UNHEALTHY
            replica.state = state
        for gone in mine.values():
            self.replicas.remove(gone)
