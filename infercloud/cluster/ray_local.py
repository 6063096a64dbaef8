"""LocalRayCluster: a Ray cluster of several nodes on this one machine, one node per region, for trying
regions and node failures without a second machine (the tests and bench/ray_failover.py use it).

Node i listens on its own loopback address, 127.0.0.(i+2): Ray rewrites 127.0.0.1 to the interface
address, so each node gets an address of its own. Node 0 is the head. Every node carries the label
`region=<its region>`. Token auth is on, with one token for every node and driver (RAY_AUTH_MODE and
RAY_AUTH_TOKEN are set in this process's environment, which the gateways it starts inherit). The GCS
checks node health every second and declares a node dead after 5 missed checks, so a killed node is
gone from the inventory within about 5 s (Ray's default: 3 s x 5, and a busy 2-core box missed
0.5 s x 4 heartbeats of a live node). Nodes other than the head run under `ray start --block` in a process group of their
own, so one can be killed alone (as a machine that crashes: its raylet and workers go) and started
again; `stop()` ends with `ray stop`, which stops every Ray node on this machine.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

OBJECT_STORE_BYTES = 100 * 2**20     # the object store is unused by infercloud: keep it small


def node_ip(index: int) -> str:
    return f"127.0.0.{index + 2}"


def _ray(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("ray")), *args]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LocalRayCluster:
    regions: list[str]                       # one node per region; the first is the head
    log_dir: Path
    num_cpus: int = 8                        # logical CPUs each node offers
    port: int = field(default_factory=lambda: _free_port(node_ip(0)))
    nodes: dict[int, subprocess.Popen] = field(default_factory=dict)   # index -> `ray start --block`

    @property
    def address(self) -> str:
        return f"{node_ip(0)}:{self.port}"

    def start(self) -> None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        head_env = {**os.environ, "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
        with (self.log_dir / "ray-node-0.log").open("w") as log:
            subprocess.run(_ray("start", "--head", f"--node-ip-address={node_ip(0)}", f"--port={self.port}",
                                *self._resources(0), "--include-dashboard=false", "--disable-usage-stats"),
                           check=True, stdout=log, stderr=subprocess.STDOUT, env=head_env, timeout=120)
        for index in range(1, len(self.regions)):
            self.start_node(index)

    def _resources(self, index: int) -> list[str]:
        return [f"--num-cpus={self.num_cpus}", f"--object-store-memory={OBJECT_STORE_BYTES}",
                f"--labels=region={self.regions[index]}"]

    def start_node(self, index: int) -> None:
        """Start (again) a node other than the head, and wait until the cluster counts it."""
        log = (self.log_dir / f"ray-node-{index}.log").open("a")
        self.nodes[index] = subprocess.Popen(
            _ray("start", "--block", f"--address={self.address}", f"--node-ip-address={node_ip(index)}",
                 *self._resources(index)),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for_nodes(1 + len(self.nodes))

    def kill_node(self, index: int) -> None:
        """The node dies at once, as a machine that crashes; returns when the cluster has noticed."""
        process = self.nodes.pop(index)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        self.wait_for_nodes(1 + len(self.nodes))

    def alive_nodes(self) -> list[dict]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, logging_level="warning")
        return [n for n in ray.nodes() if n.get("Alive")]

    def wait_for_nodes(self, count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.alive_nodes()) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster did not reach {count} live nodes: {self.alive_nodes()}")
            time.sleep(0.2)

    def stop(self) -> None:
        import ray

        ray.shutdown()
        for process in self.nodes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        self.nodes.clear()
        subprocess.run(_ray("stop"), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=120)
