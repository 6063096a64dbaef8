"""Prober: one health probe for dedicated replicas, external replicas and pool workers, and the calls the
controller makes to workers (POST /internal/load and /internal/unload).

A probe: a worker whose process has exited is DEAD at once; otherwise GET /health (200 = alive) and, for
native workers, GET /internal/state (parsed into contracts.WorkerState). A pass makes a STARTING or
UNHEALTHY target READY (DRAINING when the worker says it drains); `unhealthy_after` failures in a row take
a READY one out of routing. External replicas are only asked /health, never shown the internal token.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from pydantic import ValidationError

from infercloud.config import ControllerSpec
from infercloud.contracts import Contract, WorkerState
from infercloud.fleet.replicas import PoolWorker, Replica, ReplicaState

log = logging.getLogger("infercloud.controller")


class Prober:
    def __init__(self, client: aiohttp.ClientSession, spec: ControllerSpec, auth: dict[str, str]):
        self.client = client
        self.spec = spec
        self.auth = auth                  # workers answer only the internal token

    async def probe(self, target: Replica | PoolWorker) -> WorkerState | None:
        """Probe it and update its state; the worker's state when the probe passed (None for an external
        replica, or a failed probe)."""
        name = target.replica_id if isinstance(target, Replica) else f"pool worker {target.worker_id}"
        if target.handle is not None and not target.handle.is_alive():
            if target.state != ReplicaState.DEAD:
                log.warning("%s: worker exited (%s)", name, exit_reason(target.handle))
            target.state = ReplicaState.DEAD
            return None
        ok, state = await self._read(target.url, getattr(target, "is_external", False))
        if target.state == ReplicaState.DRAINING or not self._count(target, ok):
            return None
        if state is not None and state.draining:
            target.state = ReplicaState.DRAINING
        elif target.state in (ReplicaState.STARTING, ReplicaState.UNHEALTHY):
            log.info("%s is ready", name)
            target.state = ReplicaState.READY
        if isinstance(target, Replica):
            target.probes_passed += 1
            if state is not None:
                target.observe(state.models.get(target.model))
        return state

    def _count(self, target: Replica | PoolWorker, ok: bool) -> bool:
        """A run of `unhealthy_after` failures takes a ready target out of routing; a pass resets the run."""
        if ok:
            target.failed_probes = 0
            return True
        target.failed_probes += 1
        if target.state == ReplicaState.READY and target.failed_probes >= self.spec.unhealthy_after:
            target.state = ReplicaState.UNHEALTHY
        return False

    async def _read(self, url: str, external: bool) -> tuple[bool, WorkerState | None]:
        try:
            if external:
                return (await self._get(f"{url}/health", {}))[0] == 200, None
            (health, _), (status, state) = await asyncio.gather(self._get(f"{url}/health", self.auth),
                                                                self._get(f"{url}/internal/state", self.auth))
            if health != 200 or status != 200:
                return False, None
            return True, WorkerState.model_validate(state)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, ValidationError):
            return False, None

    async def _get(self, url: str, headers: dict[str, str]) -> tuple[int, dict | None]:
        timeout = aiohttp.ClientTimeout(total=self.spec.probe_timeout_s)
        async with self.client.get(url, timeout=timeout, headers=headers) as response:
            body = await response.json(content_type=None) if response.status == 200 else None
            return response.status, body

    async def post(self, url: str, message: Contract, timeout_s: float) -> tuple[int, dict | None]:
        """POST a contract message to a worker's internal route; (0, error) when it cannot be reached."""
        try:
            async with self.client.post(url, json=message.model_dump(), headers=self.auth,
                                        timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return 0, {"error": repr(exc)}


def exit_reason(handle) -> str:
    reason = getattr(handle, "exit_reason", None)
    if reason is not None:
        return reason() or "exited"
    code = getattr(getattr(handle, "process", None), "returncode", None)
    return f"exit status {code}" if code is not None else "exited"
