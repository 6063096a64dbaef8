"""The control-plane benchmark: W5 with prefix_aware against round_robin, and the gateway's own latency.

    python -m infercloud.bench.routing --replicas 2 --concurrency 8 --out bench-results/routing.json

One cloud serves the model twice under two names, `w5-round-robin` and `w5-prefix-aware`, each with
its own replicas (same weights, same engine config), so both policies run in one process tree on the
same machine, one after the other, on the same W5 requests (16 shared 1024-token prefixes, shuffled). Each replica's KV cache is sized to hold fewer than all 16 prefixes, as a fleet serving
more tenants than one replica can cache would be: round_robin makes every replica cycle through all
of them, prefix_aware gives each replica its share. First, on a cloud of one replica, the gateway
overhead: p50 latency of a 1-token completion through the gateway minus straight to its worker,
interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import httpx

from infercloud.bench.http_client import internal_state
from infercloud.bench.peers.cloud import CloudPeer
from infercloud.bench.report import run_and_report
from infercloud.bench.serve import BenchConfig, run_bench
from infercloud.bench.workloads import WorkloadShape, make_workload
from infercloud.cluster.local import free_port
from infercloud.config import TenantSpec
from infercloud.internal_token import bearer, client_token
from infercloud.store.database import open_database
from infercloud.tenancy.store import TenantStore

MODEL = "smollm2-135m-instruct"
POLICIES = ("round_robin", "prefix_aware")


def served_name(policy: str) -> str:
    return f"w5-{policy.replace('_', '-')}"


def cloud_config(replicas: int, kv_cache_gb: float, threads: int) -> dict:
    engine = {"kv_cache_memory_gb": kv_cache_gb}
    return {"cluster": {"threads_per_worker": threads},
            "controller": {"probe_interval_s": 1.0},
            "models": [{"name": served_name(p), "path": MODEL, "replicas": replicas, "routing": p, "engine": engine}
                       for p in POLICIES]}


def gateway_overhead(gateway_url: str, worker_url: str, model: str, num: int,
                     gateway_headers: dict[str, str] | None = None) -> dict:
    """p50/p90 of a 1-token completion both ways (gateway -> its only worker, and that worker straight),
    interleaved so drift hits both alike."""
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    ways = (("direct", worker_url, bearer(client_token())),   # a cloud's worker answers only the internal token
            ("gateway", gateway_url, gateway_headers or {}))
    with httpx.Client(timeout=60) as client:
        for _ in range(5):  # warm connections and caches
            for _, url, headers in ways:
                client.post(f"{url}/v1/completions", json=body, headers=headers).raise_for_status()
        for _ in range(num):
            for name, url, headers in ways:
                start = time.perf_counter()
                client.post(f"{url}/v1/completions", json=body, headers=headers).raise_for_status()
                times[name].append(time.perf_counter() - start)
    out = {name: {"p50_ms": 1e3 * statistics.median(t), "p90_ms": 1e3 * statistics.quantiles(t, n=10)[-1]}
           for name, t in times.items()}
    out["added_p50_ms"] = out["gateway"]["p50_ms"] - out["direct"]["p50_ms"]
    out["num_requests"] = num
    return out


def measure_overhead(num: int, threads: int, tenancy: bool = False) -> dict:
    """Gateway overhead on a cloud of one replica: with several, which worker a request meets (one
    just used, or one idle for a while) moves its latency by more than the gateway adds.

    `tenancy`: the gateway also authenticates a key, checks rate limits, concurrency and a budget,
    and writes a priced ledger row (SQLite) for every request."""
    engine = {"kv_cache_memory_gb": 0.1}
    price = {"input_per_mtok": 0.1, "output_per_mtok": 0.4, "device_per_hour": 1.0}
    config = {"cluster": {"threads_per_worker": threads},
              "models": [{"name": "overhead", "path": MODEL, "replicas": 1, "engine": engine, "price": price}]}
    peer = CloudPeer(config)
    if tenancy:
        url = f"sqlite:///{peer.dir / 'overhead-ledger.db'}"
        peer.dir.mkdir(parents=True, exist_ok=True)
        store = TenantStore(open_database(url))
        store.upsert_tenant(TenantSpec("bench", requests_per_minute=10**6, tokens_per_minute=10**9,
                                       max_concurrent=64, budget_usd=10**6))
        peer.api_key, _ = store.create_key("bench")
        store.engine.dispose()
        config["tenancy"] = {"database": url}
    peer.start(free_port())
    try:
        (worker,) = internal_state(peer.base_url)["replicas"]
        return gateway_overhead(peer.base_url, worker["url"], "overhead", num, peer.auth_headers)
    finally:
        peer.stop()


def run(args: argparse.Namespace) -> dict:
    overhead = measure_overhead(args.overhead_requests, args.threads)
    overhead_tenancy = measure_overhead(args.overhead_requests, args.threads, tenancy=True)
    if args.overhead_only:
        return {"machine_cpus": _cpus(), "gateway_overhead": overhead, "gateway_overhead_with_tenancy": overhead_tenancy}
    peer = CloudPeer(cloud_config(args.replicas, args.kv_cache_gb, args.threads))
    peer.start(free_port())
    try:
        shape = WorkloadShape(vocab_size=49152)
        results = {}
        for policy in POLICIES:
            config = BenchConfig(peer.base_url, served_name(policy), make_workload("W5", shape),
                                 concurrency=args.concurrency, num_requests=args.num_requests, seed=args.seed,
                                 progress=not args.no_progress)
            results[policy] = run_bench(config).summary
        state = internal_state(peer.base_url)
    finally:
        peer.stop()
    rr, pa = (results[p]["ttft_s"] for p in POLICIES)
    return {"machine_cpus": _cpus(), "replicas": args.replicas, "concurrency": args.concurrency,
            "kv_cache_gb_per_replica": args.kv_cache_gb, "threads_per_worker": args.threads,
            "w5": results, "p90_ttft_ratio_rr_over_prefix": rr["p90"] / pa["p90"],
            "replica_state": [{k: r[k] for k in ("replica_id", "num_routed")} |
                              {"prefix_cache_hit_rate": (r["engine"] or {}).get("prefix_cache_hit_rate")}
                              for r in state["replicas"]],
            "gateway_overhead": overhead, "gateway_overhead_with_tenancy": overhead_tenancy}


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def print_report(report: dict) -> None:
    if "w5" in report:
        print_w5(report)
    for key, what in (("gateway_overhead", "open"), ("gateway_overhead_with_tenancy", "with auth, limits, ledger")):
        o = report[key]
        print(f"1-token completion p50: direct {o['direct']['p50_ms']:.2f} ms, through the gateway ({what}) "
              f"{o['gateway']['p50_ms']:.2f} ms: the gateway adds {o['added_p50_ms']:.2f} ms")


def print_w5(report: dict) -> None:
    print(f"W5 over {report['replicas']} replicas, concurrency {report['concurrency']}:")
    print(f"{'policy':<14}{'TTFT p50 ms':>12}{'TTFT p90 ms':>12}{'out tok/s':>11}{'failed':>8}")
    for policy, s in report["w5"].items():
        print(f"{policy:<14}{1e3 * s['ttft_s']['p50']:>12.0f}{1e3 * s['ttft_s']['p90']:>12.0f}"
              f"{s['output_throughput_tok_s']:>11.1f}{s['failed']:>8}")
    print(f"p90 TTFT round_robin / prefix_aware: {report['p90_ttft_ratio_rr_over_prefix']:.2f}x")
    for r in report["replica_state"]:
        print(f"  {r['replica_id']}: {r['num_routed']} requests, prefix-cache hit rate {r['prefix_cache_hit_rate']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.routing", description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="replicas per policy (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop concurrency (default 8)")
    parser.add_argument("--num-requests", type=int, default=None, help="default: W5's 256 (16 tenants x 16 questions)")
    parser.add_argument("--kv-cache-gb", type=float, default=0.6,
                        help="KV cache per replica (default 0.6: ~13 of the 16 prefixes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--overhead-requests", type=int, default=300, help="1-token requests each way (default 300)")
    parser.add_argument("--overhead-only", action="store_true", help="only the gateway overhead, open and with tenancy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the report here as JSON")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    return run_and_report(args, run, print_report)


if __name__ == "__main__":
    sys.exit(main())
