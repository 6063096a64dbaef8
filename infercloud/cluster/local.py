"""LocalBackend: workers as `infercloud worker` subprocesses on free loopback ports of this machine.

Each worker gets its own YAML config in the run folder (its WorkerConfig) and its own log file. Workers are asked to die
with the parent (PR_SET_PDEATHSIG on Linux), so a gateway killed with SIGKILL leaves no orphans.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from infercloud.cluster.base import NodeView, WorkerSpec
from infercloud.config import WorkerConfig
from infercloud.internal_token import TOKEN_ENV

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout_s: float, drain: bool = True) -> int:
    """SIGTERM (a server drains) or SIGKILL; kill it if it is still there after `timeout_s`. Its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM if drain else signal.SIGKILL)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def config_to_yaml(config: WorkerConfig) -> str:
    """A worker's config as the YAML that load_worker_config reads, without the internal token (that goes in
    the worker's environment, never on disk)."""
    return yaml.safe_dump(dataclasses.asdict(dataclasses.replace(config, internal_token=None)), sort_keys=False)


@dataclass
class LocalWorker:
    worker_id: str
    url: str
    process: subprocess.Popen
    log_path: Path
    region: str | None = None
    node_id: str = "local"

    def is_alive(self) -> bool:
        return self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid


class LocalBackend:
    def __init__(self, run_dir: Path, host: str = "127.0.0.1", region: str | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.region = region

    def start_worker(self, spec: WorkerSpec) -> LocalWorker:
        port = free_port(self.host)
        config = dataclasses.replace(spec.config, host=self.host, port=port, worker_id=spec.worker_id)
        config_path = self.run_dir / f"{spec.worker_id}.yaml"
        config_path.write_text(config_to_yaml(config))
        log_path = self.run_dir / f"{spec.worker_id}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads)}
        if spec.config.internal_token is not None:   # in its environment, never on a command line or on disk
            env[TOKEN_ENV] = spec.config.internal_token
        with log_path.open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "infercloud", "worker", "--config", str(config_path)],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                       preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        return LocalWorker(spec.worker_id, f"http://{self.host}:{port}", process, log_path, self.region)

    def stop_worker(self, handle: LocalWorker, drain: bool = True, timeout_s: float = 30.0) -> None:
        stop_process(handle.process, timeout_s, drain)

    def nodes(self) -> list[NodeView]:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            memory = None
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        labels = {"region": self.region} if self.region else {}
        return [NodeView("local", os.cpu_count() or 1, memory, "cuda" if gpus else "cpu", labels, self.host, gpus)]
