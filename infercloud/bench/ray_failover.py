"""Across Ray nodes: the cloud's start on Ray against local subprocesses, and what a node's death costs.

`python -m infercloud.bench.ray_failover [--streams 4] [--tokens 200] [--out FILE.json]`

Starts a 2-node Ray cluster on this machine (cluster/ray_local.py: 127.0.0.2 is region-a, 127.0.0.3
is region-b) and measures, with SmolLM2 and one replica per region:
  start: from launching `infercloud serve` until every replica is ready, on the ray backend, and on
    the local backend (subprocesses of the gateway, the peer) with the same models in the same run.
  node loss: `--streams` streams of `--tokens` tokens are served in region-b; once each has 10 tokens,
    region-b's node is killed (its process group: raylet and workers die at once, as a machine that
    crashes). Per stream, the stall: the longest gap between two tokens at the client (the break and
    the resume on region-a), against the median gap (the stream's pace). Every stream must end whole.
    Then: kill -> region-b's replica ready again (placed in region-a, the nearest with a node); and
    after the node is started again, start -> the replica back home in region-b and the stand-in gone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from infercloud.bench.http_client import internal_state
from infercloud.bench.peers.cloud import CloudPeer
from infercloud.bench.report import machine_info, run_and_report
from infercloud.cluster.local import free_port
from infercloud.cluster.ray_local import LocalRayCluster

REGIONS = ["region-a", "region-b"]
MODEL = {"name": "smol", "path": "smollm2-135m-instruct", "engine": {"kv_cache_memory_gb": 0.1}}


def cloud_config(backend: dict) -> dict:
    regional = backend["backend"] == "ray"
    model = {**MODEL, "regions": dict.fromkeys(REGIONS, 1)} if regional else {**MODEL, "replicas": 2}
    config = {"cluster": {**backend, "threads_per_worker": 1},
              "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2}, "models": [model]}
    if regional:
        config["regions"] = [{"name": REGIONS[0], "latency_ms": {REGIONS[1]: 30}}, {"name": REGIONS[1]}]
    return config


def replicas(url: str) -> list[dict]:
    return internal_state(url)["replicas"]


def wait_until(condition, timeout_s: float = 300.0, every_s: float = 0.05) -> float:
    """Seconds until `condition()` holds (polling)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError("the condition did not hold in time")
        time.sleep(every_s)
    return time.monotonic() - start


def start_cloud(backend: dict, work_dir: Path) -> tuple[CloudPeer, float]:
    peer = CloudPeer(cloud_config(backend), home=work_dir / backend["backend"])
    started = time.monotonic()
    peer.start(free_port())
    wait_until(lambda: sum(r["state"] == "ready" for r in replicas(peer.base_url)) == 2)
    return peer, time.monotonic() - started


async def timed_stream(client: httpx.AsyncClient, tokens: int, progress: list[int], index: int) -> dict:
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": tokens, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    arrivals, last = [], None
    async with client.stream("POST", "/v1/completions", json=body, headers={"x-infercloud-region": REGIONS[1]}) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            last = line
            if '"text"' in line:
                arrivals.append(time.monotonic())
                progress[index] += 1
            elif '"usage"' in line:
                usage = json.loads(line[6:])["usage"]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return {"status": r.status_code, "completion_tokens": usage["completion_tokens"], "done": last == "data: [DONE]",
            "stall_s": max(gaps), "median_gap_s": statistics.median(gaps)}


def node_loss(url: str, cluster: LocalRayCluster, num_streams: int, tokens: int) -> dict:
    def placement() -> list[tuple[str, str, str]]:
        return sorted((r["wanted_region"], r["region"], r["state"]) for r in replicas(url))

    home = [(REGIONS[0], REGIONS[0], "ready"), (REGIONS[1], REGIONS[1], "ready")]
    assert placement() == home, placement()

    async def main() -> tuple[list[dict], float]:
        progress = [0] * num_streams
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            streams = [asyncio.create_task(timed_stream(client, tokens, progress, i)) for i in range(num_streams)]
            while min(progress) < 10:
                await asyncio.sleep(0.01)
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill_node, 1)
            await asyncio.to_thread(wait_until, lambda: placement() == [
                (REGIONS[0], REGIONS[0], "ready"), (REGIONS[1], REGIONS[0], "ready")])   # while the streams go on
            replaced_s = time.monotonic() - killed_at
            return await asyncio.gather(*streams), replaced_s

    streams, replaced_s = asyncio.run(main())
    restarted_at = time.monotonic()
    cluster.start_node(1)
    wait_until(lambda: placement() == home)
    return {"streams": streams, "all_whole": all(s["status"] == 200 and s["done"] and s["completion_tokens"] == tokens
                                                 for s in streams),
            "replacement_ready_s": replaced_s, "back_home_s": time.monotonic() - restarted_at}


def run(args: argparse.Namespace) -> dict:
    work_dir = Path(tempfile.mkdtemp(prefix="ray-failover-"))
    cluster = LocalRayCluster(REGIONS, work_dir / "ray")
    cluster.start()
    report: dict = {"machine": machine_info(), "streams": args.streams, "tokens": args.tokens, "start_s": {}}
    try:
        for backend in ({"backend": "local"}, {"backend": "ray", "address": cluster.address}):
            peer, seconds = start_cloud(backend, work_dir)
            report["start_s"][backend["backend"]] = seconds
            try:
                if backend["backend"] == "ray":
                    report["node_loss"] = node_loss(peer.base_url, cluster, args.streams, args.tokens)
            finally:
                peer.stop()
    finally:
        cluster.stop()
    return report


def print_report(report: dict) -> None:
    start = report["start_s"]
    print(f"start, launch -> 2 replicas ready: ray {start['ray']:.2f} s, local {start['local']:.2f} s "
          f"({start['ray'] / start['local']:.2f}x)")
    loss = report["node_loss"]
    stalls = sorted(s["stall_s"] for s in loss["streams"])
    pace = statistics.median(s["median_gap_s"] for s in loss["streams"])
    print(f"node loss, {report['streams']} streams of {report['tokens']} tokens: all whole: {loss['all_whole']}; "
          f"stall p50 {statistics.median(stalls):.2f} s, max {stalls[-1]:.2f} s (pace {pace * 1000:.0f} ms/token)")
    print(f"kill -> replica ready again in the other region: {loss['replacement_ready_s']:.2f} s; "
          f"node back -> replica home: {loss['back_home_s']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--out", default=None, help="write the JSON report here")
    return run_and_report(parser.parse_args(argv), run, print_report)


if __name__ == "__main__":
    raise SystemExit(main())
