"""Priority tiers under load: TTFT of interactive requests beside a batch flood, on one replica.

    python -m infercloud.bench.tiers --out bench-results/tiers.json

A cloud with tenancy serves one SmolLM2 replica (`max_num_seqs` slots). A batch tenant keeps
`--batch-concurrency` streams going (closed loop); an interactive tenant sends `--interactive-requests`
streams, `--interactive-concurrency` at a time. The same load runs twice in one process tree: once
with the interactive tenant at tier `batch` too (first come, first served: the peer), once at tier
`interactive`. Reported: TTFT p50/p90 per tenant and run, and the interactive p90 ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

from infercloud.bench.peers.cloud import CloudPeer
from infercloud.bench.report import write_json
from infercloud.cluster.local import free_port
from infercloud.config import TenantSpec
from infercloud.store.database import open_database
from infercloud.tenancy.store import TenantStore

MODEL = "smollm2-135m-instruct"
PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


async def _ttft(client: httpx.AsyncClient, key: str, max_tokens: int) -> float:
    body = {"model": "tiers", "messages": PROMPT, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    start = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        first = None
        async for line in response.aiter_lines():
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - start
    return first


async def _load(base_url: str, batch_key: str, urgent_key: str, args: argparse.Namespace) -> dict:
    done = asyncio.Event()
    batch_ttfts: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        async def batch_worker():
            while not done.is_set():
                batch_ttfts.append(await _ttft(client, batch_key, args.batch_max_tokens))

        async def urgent_worker(n: int) -> list[float]:
            return [await _ttft(client, urgent_key, args.interactive_max_tokens) for _ in range(n)]

        flood = [asyncio.create_task(batch_worker()) for _ in range(args.batch_concurrency)]
        await asyncio.sleep(args.warmup_s)  # every slot busy with batch work first
        per_worker = args.interactive_requests // args.interactive_concurrency
        urgent = [t for ts in await asyncio.gather(*(urgent_worker(per_worker)
                                                      for _ in range(args.interactive_concurrency))) for t in ts]
        done.set()
        await asyncio.gather(*flood)
    return {"interactive": _summary(urgent), "batch": _summary(batch_ttfts)}


def _summary(ttfts: list[float]) -> dict:
    return {"n": len(ttfts), "ttft_p50_ms": 1e3 * statistics.median(ttfts),
            "ttft_p90_ms": 1e3 * statistics.quantiles(ttfts, n=10)[-1]}


def run(args: argparse.Namespace) -> dict:
    engine = {"kv_cache_memory_gb": 0.5, "max_num_seqs": args.max_num_seqs}
    peer = CloudPeer({"cluster": {"threads_per_worker": args.threads},
                      "models": [{"name": "tiers", "path": MODEL, "replicas": 1, "engine": engine}]})
    peer.dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{peer.dir / 'tiers.db'}"
    store = TenantStore(open_database(url))
    keys = {}
    for name, tier in (("flood", "batch"), ("fcfs", "batch"), ("urgent", "interactive")):
        store.upsert_tenant(TenantSpec(name, tier=tier))
        keys[name], _ = store.create_key(name)
    store.engine.dispose()
    peer.config["tenancy"] = {"database": url}
    peer.api_key = keys["flood"]
    peer.start(free_port())
    try:
        fcfs = asyncio.run(_load(peer.base_url, keys["flood"], keys["fcfs"], args))
        tiers = asyncio.run(_load(peer.base_url, keys["flood"], keys["urgent"], args))
    finally:
        peer.stop()
    return {"max_num_seqs": args.max_num_seqs, "batch_concurrency": args.batch_concurrency,
            "interactive_concurrency": args.interactive_concurrency, "fcfs": fcfs, "tiers": tiers,
            "interactive_p90_ratio_fcfs_over_tiers":
                fcfs["interactive"]["ttft_p90_ms"] / tiers["interactive"]["ttft_p90_ms"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.tiers", description=__doc__.split("\n")[0])
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--batch-concurrency", type=int, default=16)
    parser.add_argument("--batch-max-tokens", type=int, default=128)
    parser.add_argument("--interactive-concurrency", type=int, default=2)
    parser.add_argument("--interactive-requests", type=int, default=20)
    parser.add_argument("--interactive-max-tokens", type=int, default=16)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    report = run(args)
    for name in ("fcfs", "tiers"):
        for tenant, s in report[name].items():
            print(f"{name:<6}{tenant:<12} n={s['n']:<4} TTFT p50 {s['ttft_p50_ms']:8.0f} ms  p90 {s['ttft_p90_ms']:8.0f} ms")
    print(f"interactive TTFT p90, first come first served / with tiers: "
          f"{report['interactive_p90_ratio_fcfs_over_tiers']:.2f}x")
    if args.out:
        write_json(Path(args.out), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
