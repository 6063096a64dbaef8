"""`bench serve` and `bench compare` end to end against a real `infercloud serve` on 127.0.0.1."""

from __future__ import annotations

import json

import httpx
import pytest

from infercloud.bench.cli import main as bench_main
from infercloud.bench.compare import CompareConfig, compare_json, markdown_header, markdown_table, run_compare
from infercloud.bench.serve import BenchConfig, run_bench, run_seed
from infercloud.bench.workloads import Interference, UniformLengths
from tests.bench.conftest import MODEL

VOCAB = 49152
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


def test_bench_serve_command_writes_json_table_and_plots(smollm2_server, tmp_path, capsys):
    out, plots = tmp_path / "w1.json", tmp_path / "plots"
    status = bench_main(["bench", "serve", "--base-url", smollm2_server.url, "--model", MODEL, "--workload", "W1",
                         "--input-len", "32", "--output-len", "8", "--concurrency", "4", "--num-requests", "20",
                         "--warmup", "2", "--slo", "ttft_ms=60000,tpot_ms=60000", "--seed", "3", "--no-progress",
                         "--out", str(out), "--plots", str(plots)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "W1 c=4" in printed and "output tok/s" in printed and "TTFT ms p99" in printed

    report = json.loads(out.read_text())
    assert {"command", "machine", "runs"} <= set(report)
    (run,) = report["runs"]
    config, summary, requests = run["config"], run["summary"], run["requests"]
    assert report["seed"] == 3 and config["seed"] == run_seed(3, "W1", 4)     # the run's own, from the command's
    assert (config["concurrency"], config["num_requests"]) == (4, 20)
    assert config["workload"] == {"name": "W1", "vocab_size": VOCAB, "input_len": 32, "output_len": 8,
                                  "range_ratio": 0.0}
    assert (summary["num_requests"], summary["completed"], summary["failed"]) == (20, 20, 0)
    assert summary["failures"] == {} and summary["warmup_failures"] == 0
    assert (summary["input_tokens"], summary["output_tokens"]) == (20 * 32, 20 * 8)
    wall = summary["wall_s"]
    assert summary["output_throughput_tok_s"] == pytest.approx(160 / wall)
    assert summary["request_throughput_req_s"] == pytest.approx(20 / wall)
    assert summary["good_requests"] == 20 and summary["goodput_req_s"] == pytest.approx(20 / wall)
    for key in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        stats = summary[key]
        assert 0 <= stats["p50"] <= stats["p90"] <= stats["p99"], key
    assert summary["ttft_s"]["p50"] <= summary["e2el_s"]["p50"]

    assert len({r["request_id"] for r in requests}) == 20
    for r in requests:
        assert (r["num_prompt_tokens"], r["completion_tokens"], r["error"]) == (32, 8, None)
        assert 0 < r["ttft_s"] <= r["e2el_s"] and r["tpot_s"] >= 0
        assert 1 <= len(r["chunk_offsets_s"]) <= 8 and r["chunk_offsets_s"][0] == pytest.approx(r["ttft_s"])
        assert 0 <= r["send_offset_s"] <= wall
    assert (plots / "latency_cdf.png").read_bytes().startswith(PNG_MAGIC)


def test_open_loop_duration_and_scheduled_runs(smollm2_server):
    tiny = UniformLengths("tiny", VOCAB, input_len=16, output_len=4)

    def bench(workload, **kwargs):
        return run_bench(BenchConfig(smollm2_server.url, MODEL, workload, num_warmup=0, progress=False, **kwargs))

    open_loop = bench(tiny, request_rate=20.0, burstiness=0.5, num_requests=6)
    assert open_loop.summary["completed"] == 6 and open_loop.load.failures == {}
    assert open_loop.config.label == "tiny rate=20 b=0.5"

    timed = bench(tiny, concurrency=2, duration_s=0.5)
    assert timed.summary["completed"] >= 1 and timed.load.failures == {}
    assert all(r.completion_tokens == 4 for r in timed.load.records)

    w6 = Interference(VOCAB, num_streams=2, stream_input_len=16, stream_output_len=6, long_input_len=96,
                      long_output_len=2, long_at_s=0.2)
    scheduled = bench(w6)
    rows = {r["request_id"]: r for r in scheduled.load.request_rows()}
    assert scheduled.summary["completed"] == 3 and rows["w6-long"]["send_offset_s"] >= 0.2
    assert rows["w6-long"]["completion_tokens"] == 2
    with pytest.raises(ValueError, match="schedule"):
        bench(w6, concurrency=2)


class RunningInfercloud:
    """Test adapter: the peer interface over the session's real `infercloud serve` (started by the fixture)."""

    name = "infercloud"
    supports_vllm_extras = True
    served_model = MODEL

    def __init__(self, server) -> None:
        self.server = server
        self.calls: list[str] = []

    @property
    def base_url(self) -> str:
        return self.server.url

    def install(self) -> None:
        self.calls.append("install")

    def start(self, port: int) -> None:
        self.calls.append("start")
        assert httpx.get(f"{self.base_url}/v1/models", timeout=10, trust_env=False).status_code == 200

    def stop(self) -> None:
        self.calls.append("stop")


class BrokenPeer:
    name = "broken"

    def install(self) -> None:
        raise RuntimeError("could not build\nits wheel")

    def start(self, port: int) -> None:
        raise AssertionError("never started")

    def stop(self) -> None:
        pass


class TextOnlyPeer(BrokenPeer):
    name = "text-only"
    accepts_token_ids = False


def test_compare_runs_each_peer_and_writes_the_side_by_side_table(smollm2_server, tmp_path):
    infercloud = RunningInfercloud(smollm2_server)
    peers = {"infercloud": infercloud, "broken": BrokenPeer(), "text-only": TextOnlyPeer(),
             "infercloud:quantization=int8": RunningInfercloud(smollm2_server)}   # a setting: its own run files
    config = CompareConfig((UniformLengths("W1", VOCAB, 16, 4),), (1, 2),
                           ("infercloud", "broken", "text-only", "infercloud:quantization=int8"),
                           tmp_path, num_requests=4, num_warmup=1, progress=False)
    compare = run_compare(config, get_peer=peers.__getitem__, port=lambda: 1)
    assert infercloud.calls == ["install", "start", "stop"]
    assert list(compare.results) == ["infercloud", "infercloud:quantization=int8"]
    assert "could not build its wheel" in compare.peer_errors["broken"]
    assert "token-id prompts" in compare.peer_errors["text-only"]  # skipped before install: never the same tokens
    for c in (1, 2):
        summary = compare.summary("infercloud", "W1", c)
        assert (summary["completed"], summary["failed"], summary["output_tokens"]) == (4, 0, 16)
    table = markdown_table(config, compare)
    assert table.count("| W1 | 1 | infercloud |") == 1 and "| W1 | 2 | broken | not run |" in table
    assert "| 4 / 0 | 1.00 | 1.00 |" in table
    box = {"gemm_fp32_decode_gflops": 150.0, "memory_gbs": 40.0}
    report = compare_json(config, compare, box)
    assert [(r["peer"], r["config"]["concurrency"]) for r in report["runs"]][:2] == [("infercloud", 1), ("infercloud", 2)]
    assert report["box_ceilings"] == box
    seeds = [r["config"]["seed"] for r in report["runs"]]
    assert seeds[:2] == [run_seed(0, "W1", 1), run_seed(0, "W1", 2)] and seeds[0] != seeds[1]   # fresh prompts a level
    header = markdown_header(config, box)
    assert "fp32_decode 150.0" in header and "memory 40.0" in header
    run_file = json.loads((tmp_path / "runs" / "infercloud-W1-c2.json").read_text())
    assert run_file["peer"] == "infercloud" and len(run_file["requests"]) == 4
    setting_file = json.loads((tmp_path / "runs" / "infercloud_quantization-int8-W1-c2.json").read_text())
    assert setting_file["peer"] == "infercloud:quantization=int8"
    assert (tmp_path / "plots" / "throughput_W1.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "plots" / "latency_cdf_W1_c1.png").is_file()


def test_compare_refuses_scheduled_workloads_before_starting_any_peer(tmp_path):
    config = CompareConfig((Interference(VOCAB, long_input_len=8),), (1,), ("infercloud",), tmp_path)
    with pytest.raises(ValueError, match="own schedule"):
        run_compare(config, get_peer=lambda name: pytest.fail("no peer should be built"))
