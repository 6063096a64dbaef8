"""The "llamacpp-server" peer: llama.cpp's own C++ `llama-server`, with parallel slots and continuous batching.

llama-cpp-python's server runs one request at a time; llama.cpp's `llama-server` serves
`--parallel` slots at once and batches their decode steps together (continuous batching), so
it is the llama.cpp a team would deploy. It is built with CMake from the llama.cpp source
vendored in the llama-cpp-python sdist (same version as the "llamacpp" peer), into
`<peers>/llamacpp-server/` (about as long as that peer's build). The context is shared by
the slots: `n_ctx` is the total, so each of 8 slots gets n_ctx / 8 (2048 with the default).
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

from infercloud.bench.peers.base import Peer, PeerError
from infercloud.bench.peers.gguf import extract_gguf
from infercloud.bench.peers.llamacpp import LLAMA_CPP_PYTHON_VERSION, cpu_flags, ggml_cmake_args, llamacpp_env
from infercloud.bench.peers.venv import MARKER, run_logged

DEFAULT_MODEL = "smollm2-135m-instruct"
CMAKE_OPTIONS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_SERVER=ON",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF")


def server_binary(peer_dir: Path) -> Path:
    return peer_dir / "build" / "bin" / "llama-server"


def build_llama_server(peer_dir: Path, version: str = LLAMA_CPP_PYTHON_VERSION, jobs: int = 2) -> Path:
    """Download the sdist, unpack its vendored llama.cpp, build `llama-server`; idempotent (marker file)."""
    binary = server_binary(peer_dir)
    if (peer_dir / MARKER).is_file() and binary.is_file():
        return binary
    peer_dir.mkdir(parents=True, exist_ok=True)
    log, started = peer_dir / "install.log", time.monotonic()
    sdist_dir = peer_dir / "sdist"
    run_logged([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(sdist_dir),
                f"llama-cpp-python=={version}"], {}, log, f"llamacpp-server: pip download llama-cpp-python=={version}")
    source = unpack_vendored_llama_cpp(next(sdist_dir.glob("llama_cpp_python-*.tar.gz")), peer_dir / "src")
    build = peer_dir / "build"
    options = [*CMAKE_OPTIONS, *ggml_cmake_args(cpu_flags()).split()]
    run_logged(["cmake", "-S", str(source), "-B", str(build), *options], {}, log, "llamacpp-server: cmake configure")
    run_logged(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], {}, log,
               "llamacpp-server: cmake build of llama-server")
    if not binary.is_file():
        raise PeerError(f"llamacpp-server: the build finished but {binary} is missing; see {log}")
    marker = {"llama_cpp_python_sdist": version, "install_s": round(time.monotonic() - started, 1)}
    (peer_dir / MARKER).write_text(json.dumps(marker) + "\n")
    return binary


def unpack_vendored_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Extract `<sdist>/vendor/llama.cpp` into `dest`; returns the llama.cpp source folder."""
    if dest.exists():
        shutil.rmtree(dest)
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    found = list(dest.glob("*/vendor/llama.cpp"))
    if not found:
        raise PeerError(f"llamacpp-server: no vendor/llama.cpp inside {sdist}")
    return found[0]


def llama_server_command(binary: Path, gguf: Path, port: int, alias: str, n_ctx: int = 16384,
                         parallel: int = 8, n_threads: int = 2) -> list[str]:
    return [str(binary), "--model", str(gguf), "--alias", alias, "--host", "127.0.0.1", "--port", str(port),
            "--ctx-size", str(n_ctx), "--parallel", str(parallel), "--cont-batching",
            "--threads", str(n_threads), "--threads-batch", str(n_threads),
            "--threads-http", "256"]  # one HTTP thread per open stream: its small default pool dropped connections


class LlamaCppServerPeer(Peer):
    name = "llamacpp-server"
    supports_vllm_extras = True    # its /v1/completions takes ignore_eos (and token-id prompts)

    def __init__(self, model: str = DEFAULT_MODEL, home: Path | None = None, n_ctx: int = 16384,
                 parallel: int = 8, n_threads: int = 2) -> None:
        super().__init__(home)
        self.model, self.n_ctx, self.parallel, self.n_threads = model, n_ctx, parallel, n_threads

    @property
    def served_model(self) -> str:
        return self.model   # set with --alias

    def install(self) -> None:
        build_llama_server(self.dir)

    def command(self, port: int) -> list[str]:
        return llama_server_command(server_binary(self.dir), extract_gguf(self.model), port, self.served_model,
                                    self.n_ctx, self.parallel, self.n_threads)

    def env(self) -> dict[str, str]:
        return llamacpp_env(self.n_threads)
