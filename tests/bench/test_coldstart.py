"""W7 helpers: the gateway-log parsing, the run summaries, the page-cache tools and the cloud config."""

from __future__ import annotations

import argparse
import os

import pytest

from infercloud.bench.coldstart import (DEDICATED, FLUSH, POOLED, cloud_config, drop_from_page_cache, folder_residency,
                                        resident_pages, start_breakdown, summarize_runs, worker_load_s)

POOLED_LOG = """\
2026-11-25 14:57:20,926 INFO infercloud.controller: autoscaler: w7-pooled 0 -> 1 replicas (requests are waiting)
2026-11-25 14:57:23,079 INFO infercloud.controller: replica w7-pooled-0: w7-pooled loaded on w7-w0 in 2.15 s
"""
DEDICATED_LOG = """\
2026-11-25 14:57:30,000 INFO infercloud.controller: autoscaler: w7-dedicated 0 -> 1 replicas (requests are waiting)
2026-11-25 14:57:30,017 INFO infercloud.controller: started replica w7-dedicated-4 at http://127.0.0.1:40001
2026-11-25 14:57:33,601 INFO infercloud.controller: replica w7-dedicated-4 is ready
"""


def test_start_breakdown_of_a_pooled_load():
    out = start_breakdown(POOLED_LOG, POOLED)
    assert out["replica_id"] == "w7-pooled-0" and out["worker"] == "w7-w0"
    assert out["controller_load_s"] == 2.15
    assert out["wake_to_ready_s"] == pytest.approx(2.153)


def test_start_breakdown_of_a_dedicated_process():
    out = start_breakdown(POOLED_LOG + DEDICATED_LOG, DEDICATED)
    assert out["replica_id"] == "w7-dedicated-4"
    assert out["process_start_to_ready_s"] == pytest.approx(3.584)
    assert out["wake_to_ready_s"] == pytest.approx(3.601)
    assert start_breakdown(DEDICATED_LOG, POOLED) == {}


def test_worker_load_s_takes_the_last_load_of_that_model():
    log = ("2026-11-25 14:54:15,885 INFO infercloud.worker: loaded w7-pooled in 0.26 s\n"
           "2026-11-25 14:54:16,006 INFO infercloud.worker: loaded w7-flush in 0.09 s\n"
           "2026-11-25 14:54:19,006 INFO infercloud.worker: loaded w7-pooled in 0.31 s\n")
    assert worker_load_s(log, POOLED) == 0.31
    assert worker_load_s(log, DEDICATED) is None


def test_summarize_runs_counts_failures_apart():
    rows = [{"ok": True, "ttft_s": 0.5, "e2el_s": 0.9, "worker_load_s": 0.3},
            {"ok": True, "ttft_s": 0.7, "e2el_s": 1.1, "worker_load_s": 0.4},
            {"ok": False, "ttft_s": None, "e2el_s": None}]
    s = summarize_runs(rows)
    assert (s["runs"], s["completed"], s["failed"]) == (3, 2, 1)
    assert s["ttft_s"]["p50"] == pytest.approx(0.6) and s["worker_load_s"]["mean"] == pytest.approx(0.35)
    assert "process_start_to_ready_s" not in s


def test_residency_of_a_file_and_the_drop(tmp_path):
    (tmp_path / "weights.bin").write_bytes(os.urandom(64 * 1024))
    os.sync()
    resident, total = resident_pages(tmp_path / "weights.bin")
    assert total == -(-64 * 1024 // os.sysconf("SC_PAGE_SIZE")) and 0 <= resident <= total
    drop_from_page_cache(tmp_path)  # the kernel may keep pages (tmpfs never drops): only check it runs
    out = folder_residency(tmp_path)
    assert out["total_bytes"] >= 64 * 1024 and 0.0 <= out["resident_fraction"] <= 1.0


def test_cloud_config_has_both_setups_and_the_flush_model():
    args = argparse.Namespace(kv_cache_gb=0.25, idle_to_zero_s=1.0, threads=1, pool_memory_gb=2.0,
                              probe_interval_s=0.5)
    config = cloud_config(args, "/m/smollm2", "/m/flush")
    models = {m["name"]: m for m in config["models"]}
    assert models[POOLED]["pool"] == "w7" and models[FLUSH]["pool"] == "w7" and "pool" not in models[DEDICATED]
    assert all(m["replicas"] == 0 and m["autoscaling"]["min_replicas"] == 0 for m in models.values())
    assert models[POOLED]["autoscaling"] is not models[DEDICATED]["autoscaling"]  # no YAML anchors
    assert config["cluster"]["pools"][0]["workers"] == 1
