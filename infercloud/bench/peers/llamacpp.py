"""The "llamacpp" peer: llama-cpp-python's OpenAI server on the GGUF file the model was converted from.

Installs PyPI `llama-cpp-python[server]` (pinned) into `<peers>/llamacpp/venv`; there is no
CPU wheel on PyPI, so pip builds llama.cpp from source (about 4-7 minutes on the 2-core box),
for this CPU's vector extensions but never AMX (see GGML_ISA_FLAGS). Served with the settings that suit this box best:
`--n_threads 2`, `--interrupt_requests False` (by default a new request cuts the running
stream short), `OMP_WAIT_POLICY=ACTIVE`, and a context of 8192 tokens. The server handles one
request at a time (it serializes them behind a lock): for parallel slots and continuous
batching see the "llamacpp-server" peer (llama.cpp's own C++ server).
"""

from __future__ import annotations

from pathlib import Path

from infercloud.bench.peers.base import Peer
from infercloud.bench.peers.gguf import extract_gguf
from infercloud.bench.peers.venv import PipStep, ensure_venv, venv_python

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_MODEL = "smollm2-135m-instruct"


# ggml's x86 ISA options and the /proc/cpuinfo flag each one needs. AMX is always off: this VM's
# CPUID advertises AMX but the kernel does not grant the tile state, so `ldtilecfg` faults (a
# native build segfaults on its first request), hence GGML_NATIVE=OFF and an explicit list.
GGML_ISA_FLAGS = {"GGML_AVX": "avx", "GGML_AVX2": "avx2", "GGML_FMA": "fma", "GGML_F16C": "f16c",
                  "GGML_BMI2": "bmi2", "GGML_AVX_VNNI": "avx_vnni", "GGML_AVX512": "avx512f",
                  "GGML_AVX512_VBMI": "avx512vbmi", "GGML_AVX512_VNNI": "avx512_vnni",
                  "GGML_AVX512_BF16": "avx512_bf16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags of this machine (empty when /proc/cpuinfo cannot be read)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def ggml_cmake_args(flags: set[str]) -> str:
    """CMAKE_ARGS building ggml for exactly the ISA extensions in `flags`, AMX excluded."""
    options = ["-DGGML_NATIVE=OFF"]
    options += [f"-D{option}={'ON' if flag in flags else 'OFF'}" for option, flag in GGML_ISA_FLAGS.items()]
    options += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    return " ".join(options)


def install_steps(version: str = LLAMA_CPP_PYTHON_VERSION, flags: set[str] | None = None) -> list[PipStep]:
    cmake_args = ggml_cmake_args(cpu_flags() if flags is None else flags)
    build_env = {"CMAKE_ARGS": cmake_args, "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    return [PipStep((f"llama-cpp-python[server]=={version}",), pip_args=("--no-cache-dir",), env=build_env)]


def llamacpp_command(python: Path, gguf: Path, port: int, alias: str, n_ctx: int = 8192,
                     n_threads: int = 2) -> list[str]:
    """The llama_cpp.server command line (flag names as its --help spells them)."""
    return [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
            "--n_threads_batch", str(n_threads), "--interrupt_requests", "False"]


def llamacpp_env(n_threads: int = 2) -> dict[str, str]:
    return {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": str(n_threads)}


class LlamaCppPeer(Peer):
    name = "llamacpp"
    supports_vllm_extras = False   # ignore_eos is silently dropped; `min_tokens` (= max_tokens) forces lengths
    accepts_token_ids = False      # `prompt` must be text (a list of ints is a validation error, HTTP 500)

    def __init__(self, model: str = DEFAULT_MODEL, home: Path | None = None, n_ctx: int = 8192,
                 n_threads: int = 2) -> None:
        super().__init__(home)
        self.model, self.n_ctx, self.n_threads = model, n_ctx, n_threads

    @property
    def served_model(self) -> str:
        return self.model   # set with --model_alias

    def install(self) -> None:
        ensure_venv(self.dir, install_steps(), self.name)

    def command(self, port: int) -> list[str]:
        return llamacpp_command(venv_python(self.dir), extract_gguf(self.model), port, self.served_model,
                                self.n_ctx, self.n_threads)

    def env(self) -> dict[str, str]:
        return llamacpp_env(self.n_threads)
