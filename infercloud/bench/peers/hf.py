"""The HF transformers peers ("hf-naive", "hf-static"): hf_server.py in infercloud's own venv, no install.

Both serve the converted Hugging Face folder of the model (fp32, 2 torch threads). "hf-naive"
runs one request at a time through `generate()` and streams tokens as they come; "hf-static"
collects up to `max_batch_size` requests (waiting at most `max_wait_ms` for them), left-pads
them into one `generate()` call, and returns every output whole when the batch finishes, so a
streamed request's first token arrives with its last (TTFT = E2EL for static batching).
Both honour `ignore_eos`; other vLLM sampling extras are accepted and ignored (greedy only).
"""

from __future__ import annotations

import sys
from pathlib import Path

from infercloud.bench.peers.base import Peer
from infercloud.models.catalog import model_path

DEFAULT_MODEL = "smollm2-135m-instruct"


def hf_server_command(python: str, model_dir: Path, served_model: str, port: int, mode: str,
                      max_batch_size: int = 8, max_wait_ms: float = 50.0, threads: int = 2) -> list[str]:
    """The command line that runs hf_server.py."""
    command = [python, "-m", "infercloud.bench.peers.hf_server", "--model-dir", str(model_dir),
               "--served-model-name", served_model, "--mode", mode, "--threads", str(threads),
               "--host", "127.0.0.1", "--port", str(port)]
    if mode == "static":
        command += ["--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms)]
    return command


class HFPeer(Peer):
    supports_vllm_extras = True    # honours ignore_eos; other vLLM extras (min_tokens, top_k, ...) are ignored

    def __init__(self, mode: str = "naive", model: str = DEFAULT_MODEL, home: Path | None = None,
                 max_batch_size: int = 8, max_wait_ms: float = 50.0, threads: int = 2) -> None:
        if mode not in ("naive", "static"):
            raise ValueError(f"mode must be 'naive' or 'static', got {mode!r}")
        self.name = f"hf-{mode}"
        super().__init__(home)
        self.mode, self.model = mode, model
        self.max_batch_size, self.max_wait_ms, self.threads = max_batch_size, max_wait_ms, threads

    @property
    def served_model(self) -> str:
        return self.model

    def command(self, port: int) -> list[str]:
        return hf_server_command(sys.executable, model_path(self.model), self.served_model, port, self.mode,
                                 self.max_batch_size, self.max_wait_ms, self.threads)

    def env(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.threads), "TOKENIZERS_PARALLELISM": "false"}
