"""A real 2-node Ray cluster on this machine for the tests: two nodes on distinct loopback addresses,
labelled as two regions.

Ray rewrites 127.0.0.1 to the interface address, so the head listens on 127.0.0.2 and the second node
on 127.0.0.3. Token auth is on, with one token shared by both nodes and every driver (RAY_AUTH_MODE and
RAY_AUTH_TOKEN are set in this process's environment, which the gateways under test inherit). The GCS
checks node health every 0.5 s, so a killed node is declared dead within about 2 s (Ray's default is
tens of seconds). The second node runs under `ray start --block` in its own process group, so the
tests can stop that node alone (kill its group: the node dies as a crashed machine would) and start it
again; `ray stop` at the end stops both.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.worker.conftest import free_port

HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
REGION_A, REGION_B = "region-a", "region-b"
NUM_CPUS = 8                      # logical CPUs per node: enough for the e2e tests' workers
OBJECT_STORE_BYTES = 100 * 2**20  # the object store is unused here: keep it small


def _ray(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("ray")), *args]


@dataclass
class RayTestCluster:
    log_dir: Path
    port: int = field(default_factory=free_port)
    node: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    def start(self) -> None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        head_env = {**os.environ, "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}
        with (self.log_dir / "ray-head.log").open("w") as log:
            subprocess.run(_ray("start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={self.port}",
                                f"--num-cpus={NUM_CPUS}", f"--object-store-memory={OBJECT_STORE_BYTES}",
                                "--include-dashboard=false", "--disable-usage-stats", f"--labels=region={REGION_A}"),
                           check=True, stdout=log, stderr=subprocess.STDOUT, env=head_env, timeout=120)
        self.start_node()

    def start_node(self) -> None:
        """The second node (region B), blocking in its own process group."""
        log = (self.log_dir / "ray-node.log").open("a")
        self.node = subprocess.Popen(
            _ray("start", "--block", f"--address={self.address}", f"--node-ip-address={NODE_IP}",
                 f"--num-cpus={NUM_CPUS}", f"--object-store-memory={OBJECT_STORE_BYTES}",
                 f"--labels=region={REGION_B}"),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for_nodes(2)

    def kill_node(self) -> None:
        """Stop the second node at once, as a machine that dies: its raylet and its workers go."""
        if self.node is not None and self.node.poll() is None:
            os.killpg(self.node.pid, signal.SIGKILL)
            self.node.wait(30)
        self.node = None
        self.wait_for_nodes(1)

    def alive_nodes(self) -> list[dict]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def wait_for_nodes(self, count: int, timeout_s: float = 60.0) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, logging_level="warning")
        deadline = time.monotonic() + timeout_s
        while len(self.alive_nodes()) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster did not reach {count} live nodes: {self.alive_nodes()}")
            time.sleep(0.2)

    def stop(self) -> None:
        import ray

        ray.shutdown()
        if self.node is not None and self.node.poll() is None:
            os.killpg(self.node.pid, signal.SIGTERM)
        subprocess.run(_ray("stop", "--force"), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=120)
        if self.node is not None:
            self.node.wait(30)
