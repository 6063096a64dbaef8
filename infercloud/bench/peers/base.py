"""The peer contract of `bench compare`: a server we can install, start on a port, and stop.

Every peer (infercloud itself, the HF transformers servers, llama.cpp, vLLM) is an OpenAI-
compatible HTTP server run as a subprocess on 127.0.0.1:port. The lifecycle is shared here:
`start()` launches `command(port)` with `env()`, sends its output to `<peer dir>/server.log`,
and waits until `GET /v1/models` answers 200; if the process dies first, or `timeout_s`
passes, it raises PeerError with the tail of that log. `stop()` sends SIGTERM to the
server's process group and kills it after a grace period.

A subclass says what to run (`command`, `env`, `served_model`) and, when it needs its own
virtualenv, how to `install()` it (see venv.py); `install()` is idempotent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from infercloud.paths import infercloud_home

LOG_TAIL_CHARS = 4000


class PeerError(RuntimeError):
    """A peer could not be installed, started or stopped; the message says why (log tail included)."""


def peers_dir() -> Path:
    """The folder holding one subfolder (virtualenv, logs, marker files) per peer."""
    return infercloud_home() / "peers"


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last `chars` characters of a log file ('' when it does not exist)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class Peer(ABC):
    """One serving system to compare against; subclasses fill in `command` and `served_model`."""

    name: str = "peer"
    supports_vllm_extras: bool = False     # accepts ignore_eos, min_tokens, ... in /v1/completions
    accepts_token_ids: bool = True         # /v1/completions takes `prompt` as a list of token ids
    stop_grace_s: float = 20.0

    def __init__(self, home: Path | None = None) -> None:
        self.dir = (home or peers_dir()) / self.name
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    # --- what a subclass provides -------------------------------------------------------------
    def install(self) -> None:
        """Make the peer runnable (idempotent). Peers running in infercloud's own venv need nothing."""

    @abstractmethod
    def command(self, port: int) -> list[str]:
        """The server's command line, listening on 127.0.0.1:port."""

    def env(self) -> dict[str, str]:
        """Extra environment variables for the server process."""
        return {}

    @property
    @abstractmethod
    def served_model(self) -> str:
        """The `model` value requests must carry."""

    # --- shared lifecycle --------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT (no /v1), valid after start()."""
        if self.port is None:
            raise PeerError(f"{self.name}: not started")
        return f"http://127.0.0.1:{self.port}"

    api_key: str | None = None  # sent as a bearer token (a gateway with tenancy wants one)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self, port: int, timeout_s: float = 600) -> None:
        """Launch the server on 127.0.0.1:port and return once GET /v1/models answers 200."""
        if self.process is not None and self.process.poll() is None:
            raise PeerError(f"{self.name}: already running on port {self.port}")
        self.install()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.process = launch(self.command(port), self.env(), self.log_path)
        try:
            wait_ready(self.process, self.base_url, timeout_s, self.log_path, self.name, headers=self.auth_headers)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the server's process group; SIGKILL it if it is still there after the grace period."""
        if self.process is not None:
            terminate(self.process, self.stop_grace_s)
        self.process = None

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def launch(command: list[str], extra_env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start `command` in its own process group with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **extra_env}
    with open(log_path, "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


def wait_ready(process: subprocess.Popen, base_url: str, timeout_s: float, log_path: Path, name: str,
               poll_s: float = 0.5, headers: dict[str, str] | None = None) -> None:
    """Poll GET base_url/v1/models until 200; raise PeerError with the log tail on death or timeout."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while True:
            if process.poll() is not None:
                raise PeerError(f"{name}: server exited with status {process.returncode} before it was ready; "
                                f"log {log_path}:\n{log_tail(log_path)}")
            try:
                if client.get(f"{base_url}/v1/models", headers=headers or {}).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise PeerError(f"{name}: not ready after {timeout_s:.0f} s; log {log_path}:\n{log_tail(log_path)}")
            time.sleep(poll_s)


def terminate(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group, wait up to `grace_s` for its leader, then SIGKILL what is left of it."""
    if process.poll() is not None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process, signal.SIGKILL)  # also reaps helpers (engine cores, workers) the leader left behind
    process.wait(timeout=10)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
