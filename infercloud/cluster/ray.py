"""RayBackend: workers as Ray actors, each serving the worker's HTTP API from its own process on its node.

The controller joins the cluster as a Ray driver (`ray.init(address)`). `start_worker` creates a
`WorkerActor` that reserves the worker's resources (CPUs = its threads, GPUs when its models run on
cuda, memory for a pool's budget) on a node matching its region (`label_selector`: nodes started with
`ray start --labels region=<name>`), so Ray's scheduler picks the node and counts what is used.
The actor binds a free port on its node's IP, reports its URL, and serves until drained or killed:
`serve()` runs the same server as `infercloud worker` in one of the actor's threads, and the call only
returns when the server exits, so a finished `serve()` call means the worker is gone (its node died,
it crashed, or it was stopped). Actors are not detached: they die with the driver, like the local
backend's subprocesses.

Ray decides placement within the constraints; the controller chooses the region (controller.py:
the model's region, else the nearest region that still has nodes) and reads the node inventory
(nodes, CPUs, GPUs, memory, labels) from Ray's GCS.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass

import ray
from ray.exceptions import GetTimeoutError, RayError

from infercloud.cluster.base import NodeView, WorkerSpec
from infercloud.cluster.local import free_port
from infercloud.config import WorkerConfig

log = logging.getLogger("infercloud.cluster")


# Actors get the environment of their node's raylet, not the driver's: these follow the controller's.
FORWARDED_ENV = ("INFERCLOUD_HOME", "HF_HUB_OFFLINE")


class PlacementError(RuntimeError):
    """No node of the cluster took the worker within the placement timeout."""


class WorkerActor:
    """Runs one worker server inside a Ray actor (threaded: `serve` holds one thread, the rest answer)."""

    def __init__(self, worker_id: str, config: WorkerConfig):
        host = ray.util.get_node_ip_address()
        self.config = dataclasses.replace(config, host=host, port=free_port(host), worker_id=worker_id)
        self._lock = threading.Lock()
        self._server = None
        self._stop_requested = False

    def address(self) -> dict:
        return {"url": f"http://{self.config.host}:{self.config.port}", "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id()}

    def serve(self) -> int:
        """Load the models and serve until drained; returns when the server has exited."""
        from infercloud.worker.server import make_server

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        server, worker = make_server(self.config)
        with self._lock:
            self._server = server
            stop_now = self._stop_requested
        if stop_now:
            worker.on_drain()
        try:
            server.run()
        finally:
            worker.shutdown()
        return 0

    def drain(self) -> None:
        """As SIGTERM to `infercloud serve`: new requests get 503, those in flight finish, then it exits."""
        with self._lock:
            self._stop_requested = True
            server = self._server
        if server is not None:
            server.worker.on_drain()


@dataclass
class RayWorker:
    worker_id: str
    url: str
    actor: object                 # the actor handle
    serve_ref: object             # the ObjectRef of its `serve()` call: ready once the worker is gone
    pid: int
    node_id: str
    region: str | None

    def is_alive(self) -> bool:
        done, _ = ray.wait([self.serve_ref], timeout=0, fetch_local=False)
        return not done

    def exit_reason(self) -> str | None:
        """Why it is gone (the actor's error), or None while it runs."""
        if self.is_alive():
            return None
        try:
            ray.get(self.serve_ref, timeout=1)
            return "exited"
        except RayError as exc:
            return str(exc).splitlines()[0]


class RayBackend:
    def __init__(self, address: str | None = None, placement_timeout_s: float = 60.0,
                 namespace: str = "infercloud"):
        if not ray.is_initialized():
            try:
                ray.init(address=address or "auto", namespace=namespace, log_to_driver=False,
                         logging_level=logging.WARNING)
            except ConnectionError as exc:  # an OSError: the CLI prints it as a user error
                raise ConnectionError(f"{exc}. Is the Ray cluster up, and is this machine one of its nodes "
                                      "(`ray start --head` or `ray start --address=HEAD:6379`, docs/ray.md)? "
                                      "cluster.address names its head; RAY_AUTH_MODE and the token must match "
                                      "the cluster's.") from None
        self.placement_timeout_s = placement_timeout_s
        self._actor = ray.remote(WorkerActor)

    def start_worker(self, spec: WorkerSpec) -> RayWorker:
        """Create the actor and wait until a node has taken it (its models load in the background)."""
        options: dict = {"num_cpus": spec.threads, "num_gpus": spec.num_gpus, "max_concurrency": 4,
                         "max_restarts": 0}
        if spec.memory_bytes:
            options["memory"] = spec.memory_bytes
        if spec.region is not None:
            options["label_selector"] = {"region": spec.region}
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        if env:
            options["runtime_env"] = {"env_vars": env}
        actor = self._actor.options(**options).remote(spec.worker_id, spec.config)
        try:
            info = self._wait_placed(actor, spec)
        except (GetTimeoutError, RayError, PlacementError) as exc:
            ray.kill(actor, no_restart=True)
            where = f" in region {spec.region}" if spec.region else ""
            raise PlacementError(f"no node{where} took worker {spec.worker_id} ({spec.threads} CPUs, "
                                 f"{spec.num_gpus} GPUs): {exc}") from None
        region = next((n.region for n in self.nodes() if n.node_id == info["node_id"]), None)
        return RayWorker(spec.worker_id, info["url"], actor, actor.serve.remote(), info["pid"], info["node_id"],
                         region)

    def _wait_placed(self, actor, spec: WorkerSpec) -> dict:
        """The actor's address once a node runs it; gives up after the placement timeout, or as soon as
        no live node of its region is left (the node it was waiting for died)."""
        ref = actor.address.remote()
        deadline = time.monotonic() + self.placement_timeout_s
        while True:
            done, _ = ray.wait([ref], timeout=1.0, fetch_local=False)
            if done:
                return ray.get(ref)
            if spec.region is not None and not any(n.region == spec.region for n in self.nodes()):
                raise PlacementError(f"no live node in region {spec.region}")
            if time.monotonic() > deadline:
                raise PlacementError(f"not placed within {self.placement_timeout_s:g} s")

    def stop_worker(self, handle: RayWorker, drain: bool = True, timeout_s: float = 30.0) -> None:
        """Drain (its requests finish) or not, then kill the actor; blocks until it is gone."""
        if drain and handle.is_alive():
            try:
                ray.get(handle.actor.drain.remote(), timeout=5)
                ray.wait([handle.serve_ref], timeout=timeout_s, fetch_local=False)
            except RayError:
                pass
        ray.kill(handle.actor, no_restart=True)
        ray.wait([handle.serve_ref], timeout=10 if drain else 2, fetch_local=False)

    def nodes(self) -> list[NodeView]:
        """The live nodes, with their resources and labels (Ray's own `ray.io/*` labels left out)."""
        views = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            labels = {k: v for k, v in (node.get("Labels") or {}).items() if not k.startswith("ray.io/")}
            gpus = int(resources.get("GPU", 0))
            views.append(NodeView(node["NodeID"], int(resources.get("CPU", 0)), int(resources.get("memory", 0)) or None,
                                  "cuda" if gpus else "cpu", labels, node.get("NodeManagerAddress", ""), gpus))
        return views
