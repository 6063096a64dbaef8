"""Governance on the request path: what five policy rules add to a completion, and whether judge traffic moves user TTFT.

    python -m infercloud.bench.governance --out bench-results/governance.json

1. Policy overhead. One cloud (one SmolLM2 replica) with tenancy on SQLite in the peer dir and two
   config-declared tenants: `plain` (no rules) and `ruled`, to which five rules apply that all evaluate on
   every request (a tools rule, an input guard, an output guard with a configured pattern, a conversation
   limit, a log_only guard on both directions with every built-in detector). The same 1-token chat
   completion (about 20 words, no personal data, so no rule decides anything) goes three ways per
   iteration, in a rotating order so drift and position hit all alike: straight to the worker, through
   the gateway as `plain`, and as `ruled`. Target: `ruled - plain` at p50 at most 1 ms. A probe with an
   e-mail address first shows that the rules are live.
2. Judge traffic against user TTFT. The same user load (a closed loop of 2 clients, streamed chat
   completions of 24 tokens) against gateways started one after the other, off/on/off/on (`--rounds`
   rounds, a fresh gateway and database per phase): `off` evaluates nothing; `on` scores every answer with
   a length evaluator and an LLM judge on the same model (a chat request at tier `batch`, off the request
   path). TTFT is read from the SSE stream (first chunk with content). After an `on` phase's load the
   judge drains (the scores are polled on GET /admin/evaluations until every answer is scored, or the
   count stops rising), and the judge scores written during the load and in all are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

import httpx

from infercloud.bench.http_client import internal_state
from infercloud.bench.peers.base import peers_dir
from infercloud.bench.peers.cloud import CloudPeer
from infercloud.bench.report import run_and_report
from infercloud.cluster.local import free_port
from infercloud.config import TenantSpec
from infercloud.internal_token import bearer, client_token
from infercloud.store.database import open_database
from infercloud.tenancy.store import TenantStore

MODEL = "smollm2-135m-instruct"
OVERHEAD_KV_GB = 0.1
TTFT_KV_GB = 0.25          # 2 user streams and up to 4 judge prompts (~200 tokens each) without preemption
OVERHEAD_WARMUP = 5
TTFT_WARMUP = 3
TTFT_CLIENTS = 2
TTFT_MAX_TOKENS = 24
TARGET_MS = 1.0            # the target for ruled - plain at p50
DRAIN_STALL_S = 30.0       # a batch's scores are written together: the count can stand still for a while
DRAIN_LIMIT_S = 180.0

# ~20 words, no personal data: every rule evaluates, none decides anything
OVERHEAD_PROMPT = ("Please summarise in one short sentence why regular maintenance of a bicycle chain "
                   "helps it last longer and ride more smoothly.")
PROBE_PROMPT = "Please write to jane.doe@example.com and say that the report is ready."
QUESTIONS = ("Explain in two sentences why the sky looks blue during the day.",
             "Give three tips for keeping a small vegetable garden healthy in summer.",
             "What is the difference between a list and a tuple in Python?",
             "Describe how a lighthouse helps ships at night.",
             "Why do leaves change colour in autumn?",
             "Suggest a name for a friendly robot and say why it fits.",
             "How does a refrigerator keep food cold?",
             "Write one sentence about the first snow of winter.")
RUBRIC = "A good answer is correct, relevant to the question and brief."

RULED_POLICIES = [
    {"name": "ruled-tools", "kind": "tools", "tenants": ["ruled"], "allow": ["lookup"],
     "conditions": {"lookup": {"limit": {"max": 10}, "query": {"required": True}}}, "action": "strip"},
    {"name": "ruled-input-guard", "kind": "guard", "tenants": ["ruled"], "direction": "input",
     "detect": ["email", "card"], "action": "redact"},
    {"name": "ruled-output-guard", "kind": "guard", "tenants": ["ruled"], "direction": "output",
     "detect": ["phone", "iban"], "patterns": {"employee_id": {"pattern": r"E-\d{6}", "max_chars": 8}},
     "action": "redact"},
    {"name": "ruled-conversation", "kind": "conversation", "tenants": ["ruled"], "max_turns": 50},
    {"name": "ruled-audit-all", "kind": "guard", "tenants": ["ruled"], "direction": "both", "mode": "log_only",
     "detect": ["email", "phone", "card", "iban"]},
]


def _peer(config: dict) -> CloudPeer:
    """A cloud peer in its own folder (peers/governance/cloud), so a bench running beside it keeps its files."""
    return CloudPeer(config, home=peers_dir() / "governance")


def _fresh_database(peer: CloudPeer, name: str) -> str:
    peer.dir.mkdir(parents=True, exist_ok=True)
    path = peer.dir / name
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _keys(url: str, tenants: list[str]) -> dict[str, str]:
    store = TenantStore(open_database(url))
    try:
        keys = {}
        for name in tenants:
            store.upsert_tenant(TenantSpec(name))
            keys[name], _ = store.create_key(name)
        return keys
    finally:
        store.engine.dispose()


# -- pure helpers: statistics and summaries ------------------------------------------------------------------
def p50_p90_ms(seconds: list[float]) -> dict:
    """{"n", "p50_ms", "p90_ms"} of durations in seconds (p90 needs 2 or more; with one it is that one)."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p90_ms": None}
    p90 = statistics.quantiles(seconds, n=10)[-1] if len(seconds) > 1 else seconds[0]
    return {"n": len(seconds), "p50_ms": 1e3 * statistics.median(seconds), "p90_ms": 1e3 * p90}


def rotated(ways: list, i: int) -> list:
    """`ways` starting at position i (mod len): iteration i sends each way in its own turn."""
    k = i % len(ways)
    return ways[k:] + ways[:k]


def overhead_summary(times: dict[str, list[float]], target_ms: float = TARGET_MS) -> dict:
    """Per way p50/p90, what the gateway adds (plain - direct) and what the rules add (ruled - plain) at p50,
    also as the median of the per-iteration differences, and whether the rules stay within `target_ms`."""
    out: dict = {way: p50_p90_ms(t) for way, t in times.items()}
    out["gateway_added_p50_ms"] = out["plain"]["p50_ms"] - out["direct"]["p50_ms"]
    out["rules_added_p50_ms"] = out["ruled"]["p50_ms"] - out["plain"]["p50_ms"]
    out["rules_added_paired_median_ms"] = 1e3 * statistics.median(r - p for r, p in zip(times["ruled"], times["plain"]))
    out["target_ms"] = target_ms
    out["within_target"] = out["rules_added_p50_ms"] <= target_ms
    return out


def content_of(line: str) -> str:
    """The delta content of one SSE line of a chat completion stream ('' for anything else); an error event
    raises ValueError."""
    if not line.startswith("data:"):
        return ""
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return ""
    chunk = json.loads(data)
    if isinstance(chunk, dict) and "error" in chunk:
        raise ValueError(f"error event: {json.dumps(chunk['error'])[:300]}")
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    for choice in choices or ():
        delta = choice.get("delta") or {}
        if delta.get("content"):
            return delta["content"]
    return ""


def judge_summary(phases: list[dict]) -> dict:
    """On/off TTFT p50 ratios per round (phases come off, on, off, on, ...), pooled over every phase of a
    kind, and off/off (the first off phase against each later one: the run's noise)."""
    offs = [p for p in phases if p["mode"] == "off"]
    ons = [p for p in phases if p["mode"] == "on"]
    rounds = [{"round": i + 1, "off_p50_ms": off["ttft"]["p50_ms"], "on_p50_ms": on["ttft"]["p50_ms"],
               "on_over_off_p50": _ratio(on["ttft"]["p50_ms"], off["ttft"]["p50_ms"])}
              for i, (off, on) in enumerate(zip(offs, ons))]
    pooled = {mode: p50_p90_ms([t for p in phases if p["mode"] == mode for t in p["ttft_s"]]) for mode in ("off", "on")}
    judged = [p["judge"] for p in ons if p.get("judge")]
    return {"rounds": rounds, "pooled": pooled,
            "pooled_on_over_off_p50": _ratio(pooled["on"]["p50_ms"], pooled["off"]["p50_ms"]),
            "pooled_on_over_off_p90": _ratio(pooled["on"]["p90_ms"], pooled["off"]["p90_ms"]),
            "off_over_first_off_p50": [_ratio(p["ttft"]["p50_ms"], offs[0]["ttft"]["p50_ms"]) for p in offs[1:]],
            "judge_scores_total": sum(j["judge_scores"] for j in judged),
            "judge_scores_during_load": sum(j["judge_scores_during_load"] for j in judged),
            "answers_scored": sum(j["answers_scored"] for j in judged),
            "answers_sent": sum(j["answers_expected"] for j in judged)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def counts_by_evaluator(report: dict) -> dict[str, int]:
    """GET /admin/evaluations?by=evaluator's rows as {evaluator: count}."""
    return {row["evaluator"]: int(row["count"]) for row in report.get("data") or ()}


def judge_errors(metrics_text: str) -> int:
    """The judge failures (no grade, an error, a timeout) the gateway's /metrics counted."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("infercloud_evaluation_dropped_total{") and 'reason="judge_error"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def log_problems(path: Path, offset: int, limit: int = 8) -> dict:
    """Lines with ERROR, Traceback or a failing judge that a gateway's log gained past `offset` bytes, and its
    workers' logs (the folder that part names), the first `limit` of them."""
    text = _read_from(path, offset)
    for folder in re.findall(r"workers log to (\S+)", text):
        text += "".join(_read_from(log, 0) for log in sorted(Path(folder).glob("*.log")))
    found = [line.strip() for line in text.splitlines() if problem_line(line)]
    return {"count": len(found), "lines": [line[:300] for line in found[:limit]]}


def problem_line(line: str) -> bool:
    return " ERROR " in line or "Traceback" in line or " CRITICAL " in line or ("judge" in line and "failed" in line)


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- 1. policy overhead -------------------------------------------------------------------------------------
def overhead_config(threads: int, database_url: str) -> dict:
    return {"cluster": {"threads_per_worker": threads},
            "models": [{"name": MODEL, "path": MODEL, "replicas": 1, "engine": {"kv_cache_memory_gb": OVERHEAD_KV_GB}}],
            "tenancy": {"database": database_url, "tenants": [{"name": "plain"}, {"name": "ruled"}]},
            "policies": RULED_POLICIES}


def chat_body(content: str, max_tokens: int, stream: bool = False) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0}
    if stream:
        body.update(stream=True, ignore_eos=True)
    return body


def probe_rules(client: httpx.Client, gateway_url: str, headers: dict[str, str]) -> dict:
    """One request with an e-mail address as `ruled`: the rules that decided, as the answer lists them."""
    response = client.post(f"{gateway_url}/v1/chat/completions", json=chat_body(PROBE_PROMPT, 1), headers=headers)
    response.raise_for_status()
    decisions = ((response.json().get("infercloud") or {}).get("policy")) or []
    return {"decided": sorted({d.get("rule") for d in decisions}),
            "header": response.headers.get("x-infercloud-policy")}


def interleaved(client: httpx.Client, ways: list[tuple[str, str, dict]], body: dict, num: int,
                warmup: int = OVERHEAD_WARMUP) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds per request per way over `num` iterations (each way once per iteration, rotating order), and
    per way how many answers carried policy decisions (expected: none)."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in ways}
    decided = {name: 0 for name, _, _ in ways}
    for i in range(warmup + num):
        for name, url, headers in rotated(ways, i):
            start = time.perf_counter()
            response = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            if i >= warmup:
                times[name].append(elapsed)
                decided[name] += bool((response.json().get("infercloud") or {}).get("policy"))
    return times, decided


def measure_policy_overhead(num: int, threads: int) -> dict:
    peer = _peer({})
    url = _fresh_database(peer, "governance-overhead.db")
    keys = _keys(url, ["plain", "ruled"])
    peer.config = overhead_config(threads, url)
    peer.api_key = keys["plain"]
    log_start = _log_size(peer.log_path)
    peer.start(free_port())
    try:
        (worker,) = internal_state(peer.base_url)["replicas"]
        ways = [("direct", worker["url"], bearer(client_token())),   # a cloud's worker answers only the internal token
                ("plain", peer.base_url, {"Authorization": f"Bearer {keys['plain']}"}),
                ("ruled", peer.base_url, {"Authorization": f"Bearer {keys['ruled']}"})]
        with httpx.Client(timeout=60, trust_env=False) as client:
            probe = probe_rules(client, peer.base_url, ways[2][2])
            times, decided = interleaved(client, ways, chat_body(OVERHEAD_PROMPT, 1), num)
    finally:
        peer.stop()
    out = overhead_summary(times)
    out.update(num_requests=num, rules=[p["name"] for p in RULED_POLICIES], probe=probe,
               answers_with_decisions=decided, log_problems=log_problems(peer.log_path, log_start))
    return out


# -- 2. judge traffic against user TTFT ---------------------------------------------------------------------
def ttft_config(threads: int, database_url: str, on: bool) -> dict:
    config = {"cluster": {"threads_per_worker": threads},
              "models": [{"name": MODEL, "path": MODEL, "replicas": 1, "engine": {"kv_cache_memory_gb": TTFT_KV_GB}}],
              "tenancy": {"database": database_url}}
    if on:
        config["evaluations"] = [{"target": MODEL, "sample": 1.0, "evaluators": [
            {"kind": "judge", "model": MODEL, "rubric": RUBRIC, "max_tokens": 4},
            {"kind": "length", "max_chars": 2000}]}]
    return config


async def _stream_ttft(client: httpx.AsyncClient, body: dict, headers: dict[str, str]) -> tuple[float | None, str | None]:
    """(TTFT in seconds, None) for one streamed chat completion, or (None, why it failed)."""
    start = time.perf_counter()
    first, done = None, False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            if response.status_code != 200:
                return None, f"HTTP {response.status_code}: {(await response.aread()).decode(errors='replace')[:200]}"
            async for line in response.aiter_lines():
                if first is None and content_of(line):
                    first = time.perf_counter() - start
                done = done or line.strip() == "data: [DONE]"
    except Exception as exc:  # noqa: BLE001 - a failed request is counted apart, never as fast
        return None, f"{type(exc).__name__}: {exc}"[:300]
    if first is None or not done:
        return None, "no content" if first is None else "no [DONE]"
    return first, None


async def user_load(base_url: str, key: str, num: int, clients: int = TTFT_CLIENTS,
                    warmup: int = TTFT_WARMUP) -> dict:
    """Closed loop: `clients` workers send streamed 24-token chat completions until `num` were sent (after
    `warmup`, one at a time, not counted). Questions rotate through QUESTIONS in send order."""
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [chat_body(QUESTIONS[i % len(QUESTIONS)], TTFT_MAX_TOKENS, stream=True) for i in range(warmup + num)]
    ttfts: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=600, trust_env=False) as client:
        warm_failed = sum([(await _stream_ttft(client, body, headers))[1] is not None for body in bodies[:warmup]])
        queue = iter(bodies[warmup:])

        async def worker() -> None:
            for body in queue:
                ttft, error = await _stream_ttft(client, body, headers)
                if error is None:
                    ttfts.append(ttft)
                else:
                    errors.append(error)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    return {"ttft_s": ttfts, "failed": len(errors), "errors": errors[:5], "warmup_failed": warm_failed,
            "wall_s": wall, "answers": warmup - warm_failed + len(ttfts)}


def _operator_get(client: httpx.Client, url: str, **params) -> httpx.Response:
    response = client.get(url, headers=bearer(client_token()), params=params)   # the internal token: an operator
    response.raise_for_status()
    return response


def scored(client: httpx.Client, base_url: str) -> dict[str, int]:
    return counts_by_evaluator(_operator_get(client, f"{base_url}/admin/evaluations", by="evaluator",
                                             target=MODEL).json())


def drain_judge(base_url: str, expected: int, poll_s: float = 1.0, stall_s: float = DRAIN_STALL_S,
                limit_s: float = DRAIN_LIMIT_S) -> dict:
    """Poll the scores until every one of `expected` answers is scored (length) or nothing was added for
    `stall_s` (at most `limit_s`): the judge scores then, and the judge failures /metrics counted."""
    start = time.perf_counter()
    with httpx.Client(timeout=30, trust_env=False) as client:
        at_end = scored(client, base_url)
        counts, last_rise = at_end, start
        while counts.get("length", 0) < expected:
            now = time.perf_counter()
            if now - last_rise >= stall_s or now - start >= limit_s:
                break
            time.sleep(poll_s)
            newer = scored(client, base_url)
            if sum(newer.values()) > sum(counts.values()):
                last_rise = time.perf_counter()
            counts = newer
        errors = judge_errors(_operator_get(client, f"{base_url}/metrics").text)
    return {"judge_scores_during_load": at_end.get("judge", 0), "judge_scores": counts.get("judge", 0),
            "answers_scored": counts.get("length", 0), "answers_expected": expected, "judge_errors": errors,
            "drain_s": time.perf_counter() - start, "drained": counts.get("length", 0) >= expected}


def run_phase(mode: str, index: int, num: int, threads: int) -> dict:
    """One fresh gateway (and database), the user load on it, and for `on` the judge's drain."""
    peer = _peer({})
    url = _fresh_database(peer, f"governance-ttft-{index}-{mode}.db")
    key = _keys(url, ["user"])["user"]
    peer.config = ttft_config(threads, url, on=mode == "on")
    peer.api_key = key
    log_start = _log_size(peer.log_path)
    peer.start(free_port())
    try:
        load = asyncio.run(user_load(peer.base_url, key, num))
        judge = drain_judge(peer.base_url, load["answers"]) if mode == "on" else None
    finally:
        peer.stop()
    return {"mode": mode, "ttft": p50_p90_ms(load["ttft_s"]), **load, "judge": judge,
            "log_problems": log_problems(peer.log_path, log_start)}


def measure_judge_ttft(num: int, rounds: int, threads: int, progress: bool = True) -> dict:
    phases = []
    for r in range(rounds):
        for mode in ("off", "on"):
            phases.append(run_phase(mode, len(phases), num, threads))
            if progress:
                p = phases[-1]
                print(f"  round {r + 1} {mode:<3}: TTFT p50 {_fmt(p['ttft']['p50_ms'])} ms over {p['ttft']['n']} "
                      f"requests", file=sys.stderr, flush=True)
    return {"requests_per_phase": num, "clients": TTFT_CLIENTS, "max_tokens": TTFT_MAX_TOKENS,
            "warmup": TTFT_WARMUP, "kv_cache_gb": TTFT_KV_GB, "phases": phases, **judge_summary(phases)}


# -- the command ---------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    import os

    report: dict = {"machine_cpus": os.cpu_count() or 1, "model": MODEL, "threads_per_worker": args.threads}
    if not args.skip_overhead:
        report["policy_overhead"] = measure_policy_overhead(args.requests, args.threads)
    if not args.skip_judge:
        report["judge_ttft"] = measure_judge_ttft(args.ttft_requests, args.rounds, args.threads)
    return report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(report: dict) -> None:
    o = report.get("policy_overhead")
    if o:
        print(f"Policy overhead: 1-token chat completion, {o['num_requests']} interleaved iterations")
        print(f"  {'way':<8}{'p50 ms':>9}{'p90 ms':>9}")
        for way in ("direct", "plain", "ruled"):
            print(f"  {way:<8}{_fmt(o[way]['p50_ms'], 2):>9}{_fmt(o[way]['p90_ms'], 2):>9}")
        print(f"  the gateway adds (plain - direct) {o['gateway_added_p50_ms']:.2f} ms at p50; five rules add "
              f"(ruled - plain) {o['rules_added_p50_ms']:.2f} ms at p50 (paired median "
              f"{o['rules_added_paired_median_ms']:.2f} ms): "
              f"{'within' if o['within_target'] else 'ABOVE'} the {o['target_ms']:g} ms target")
        print(f"  rules live: a probe with an e-mail address was decided by {', '.join(o['probe']['decided']) or 'NONE'}; "
              f"measured answers with decisions: {o['answers_with_decisions']['ruled']}")
        _print_log_problems("overhead", o["log_problems"])
    j = report.get("judge_ttft")
    if j:
        print(f"Judge traffic vs user TTFT: {j['clients']} clients, {j['max_tokens']}-token streams, "
              f"{j['requests_per_phase']} requests per phase")
        print(f"  {'phase':<7}{'n':>4}{'failed':>7}{'p50 ms':>9}{'p90 ms':>9}  judge scores (in load / all), "
              f"judge errors, drain")
        for i, p in enumerate(j["phases"]):
            line = (f"  {p['mode'] + '-' + str(i // 2 + 1):<7}{p['ttft']['n']:>4}{p['failed']:>7}"
                    f"{_fmt(p['ttft']['p50_ms']):>9}{_fmt(p['ttft']['p90_ms']):>9}")
            if p["judge"]:
                g = p["judge"]
                line += (f"  {g['judge_scores_during_load']} / {g['judge_scores']} of {g['answers_expected']} answers, "
                         f"{g['judge_errors']} errors, {g['drain_s']:.1f} s{'' if g['drained'] else ' (NOT drained)'}")
            print(line)
        per_round = ", ".join(f"round {r['round']} {_fmt(r['on_over_off_p50'], 2)}x" for r in j["rounds"])
        print(f"  TTFT p50 on/off: {per_round}; pooled {_fmt(j['pooled_on_over_off_p50'], 2)}x "
              f"(p90 {_fmt(j['pooled_on_over_off_p90'], 2)}x)")
        if j["off_over_first_off_p50"]:
            print(f"  noise, later off / first off at p50: "
                  f"{', '.join(_fmt(x, 2) + 'x' for x in j['off_over_first_off_p50'])}")
        for i, p in enumerate(j["phases"]):
            _print_log_problems(f"{p['mode']}-{i // 2 + 1}", p["log_problems"])


def _print_log_problems(label: str, problems: dict) -> None:
    if problems["count"]:
        print(f"  {label}: {problems['count']} error lines in the gateway log, first: {problems['lines'][0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infercloud.bench.governance", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300,
                        help="policy overhead: interleaved iterations, one request each way (default 300)")
    parser.add_argument("--ttft-requests", type=int, default=40,
                        help="judge vs TTFT: timed user requests per phase, after 3 warm-ups (default 40)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="judge vs TTFT: off/on rounds, a fresh gateway per phase (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--skip-overhead", action="store_true", help="skip the policy overhead measurement")
    parser.add_argument("--skip-judge", action="store_true", help="skip the judge traffic vs user TTFT measurement")
    parser.add_argument("--out", default=None, help="write the report here as JSON")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.ttft_requests < 1 or args.rounds < 1:
        parser.error("--requests, --ttft-requests and --rounds must be at least 1")
    return run_and_report(args, run, print_report)


if __name__ == "__main__":
    sys.exit(main())
