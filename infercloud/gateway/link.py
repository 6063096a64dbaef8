"""ControllerLink: a gateway that runs no controller mirrors the replica set of the gateway that does.

Several gateways (one per region, say) share one controller: the first runs it (`infercloud serve` with
a `cluster` section), the others name it (`gateway.controller_url: http://host:port`). Every
`sync_interval_s`, and at once when a request waits for a model with no ready replica, a linked gateway
POSTs to the controller's `/internal/sync` a contracts.SyncReport: what it saw since its last report
(arrivals, requests held, stream TTFT/TPOT per model: the autoscaler adds them to its own) and the models
it waits for (the controller starts them now). It gets back a SyncReply with every replica's record, and
makes its own set the controller's (the link is the set's one writer here). Its load book is its own and
carries on; a replica it could not reach stays out of its routing until the controller's next passing
probe of it (the record's `probes_passed`). When the controller cannot be reached, the gateway keeps
routing on the last set it had.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
from pydantic import ValidationError

from infercloud.contracts import ControlState, SyncReply, SyncReport
from infercloud.fleet.replicas import ReplicaSet
from infercloud.fleet.traffic import Traffic
from infercloud.internal_token import bearer

log = logging.getLogger("infercloud.gateway")


class ControllerLink:
    def __init__(self, url: str, fleet: ReplicaSet, traffic: Traffic, models: list[str],
                 client: aiohttp.ClientSession, gateway_id: str, interval_s: float, token: str,
                 clock: Callable[[], float] = time.monotonic):
        self.url = url.rstrip("/")
        self.auth = bearer(token)        # the controller's /internal/sync is on the internal plane
        self.fleet = fleet
        self.traffic = traffic
        self.models = models
        self.client = client
        self.gateway_id = gateway_id
        self.interval_s = interval_s
        self.clock = clock
        self.synced = ControlState()               # the controller's targets, pool workers and nodes
        self.num_syncs = 0
        self._reported_at = clock()
        self._wants: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def want(self, model: str) -> None:
        self._wants.add(model)
        self._wake.set()

    def public_state(self) -> dict:
        return {**self.synced.model_dump(), "controller": self.url}

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
        report = SyncReport(gateway_id=self.gateway_id, wants=tuple(wants),
                            traffic=self.traffic.reports_since(self._reported_at, self.models))
        try:
            async with self.client.post(f"{self.url}/internal/sync", json=report.model_dump(), headers=self.auth,
                                        timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status == 401:
                    raise aiohttp.ClientError("401: the controller's gateway refused this gateway's internal "
                                              "token; give every gateway the same one (INFERCLOUD_INTERNAL_TOKEN)")
                if response.status != 200:
                    raise aiohttp.ClientError(f"status {response.status}")
                reply = SyncReply.model_validate(await response.json())
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, ValidationError) as exc:
            log.warning("sync with the controller at %s failed: %r", self.url, exc)
            return False
        self._reported_at = now
        self._wants -= set(wants)
        self.fleet.mirror(reply.replicas)
        self.synced = ControlState.model_validate(reply.model_dump(exclude={"replicas"}))
        self.num_syncs += 1
        return True
