"""The dashboard: one static page that polls a JSON summary of the gateway (or of a single box).

  GET /dashboard                    the page (static HTML, no data in it: served to anyone, like /health)
  GET /dashboard/static/<file>      its script, stylesheet and the vendored charting library (uPlot, MIT)
  GET /dashboard/data               the summary, JSON: the same credential as /metrics (the internal token,
                                    or with tenancy an admin key), checked by the server's RequestGuard

The page reads its key from the URL fragment (`/dashboard#key=...`, never sent to the server) or asks for
one, keeps it in sessionStorage and polls /dashboard/data every 2 s with `Authorization: Bearer`.

On a gateway the summary holds models (replicas ready, target, requests, errors, SLO targets), replicas
with their state and load, pool workers, regions, nodes; per model the TTFT and TPOT p50/p90 of recent
streams in 15 s buckets over the last 10 minutes (fleet/traffic.py's samples); a timeline of what the
controller changed: its target changes with the autoscaler's reason (the controller keeps the last 100,
ControlState.changes) and replica states, sampled once a second from the first dashboard request on;
tenants' tokens and cost since UTC midnight (the ledger, with tenancy); the last non-2xx answers with their
error code.
On a single box: each model's engine load and tokens generated, and its requests' TTFT and TPOT p50/p90 as
plots against its SLO.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.responses import FileResponse, JSONResponse, Response

STATIC_DIR = Path(__file__).with_name("static")
PAGE_PATH, DATA_PATH, STATIC_PREFIX = "/dashboard", "/dashboard/data", "/dashboard/static/"
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css",
                "uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css"}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                           "base-uri 'none'; frame-ancestors 'none'",
                "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

PLOT_WINDOW_S, PLOT_BUCKET_S = 600.0, 15.0
SAMPLE_INTERVAL_S = 1.0
TENANTS_CACHE_S = 5.0
MAX_ERRORS, MAX_EVENTS = 50, 200


def is_page(path: str) -> bool:
    """The page and its static files: public (they hold no data); /dashboard/data is not."""
    return path in (PAGE_PATH, PAGE_PATH + "/") or (path.startswith(STATIC_PREFIX)
                                                    and path[len(STATIC_PREFIX):] in STATIC_FILES)


def percentiles(samples: list[tuple[float, float]], now: float, window_s: float = PLOT_WINDOW_S,
                bucket_s: float = PLOT_BUCKET_S) -> tuple[list[float], list[float | None], list[float | None]]:
    """(bucket end times, p50, p90) of (time, value) samples over the last `window_s` (times on `now`'s clock);
    None where a bucket has no sample."""
    n = int(window_s // bucket_s)
    start = now - n * bucket_s
    buckets: list[list[float]] = [[] for _ in range(n)]
    for t, v in samples:
        if start <= t <= now:
            buckets[min(n - 1, int((t - start) // bucket_s))].append(v)
    ends = [start + (i + 1) * bucket_s for i in range(n)]
    p50, p90 = [], []
    for values in buckets:
        values.sort()
        p50.append(values[(len(values) - 1) // 2] if values else None)
        p90.append(values[min(len(values) - 1, int(0.9 * len(values)))] if values else None)
    return ends, p50, p90


def latency_series(ttft: list[tuple[float, float]], tpot: list[tuple[float, float]], now: float, offset: float,
                   counted: str) -> dict:
    """A model's plots: TTFT and TPOT p50/p90 per bucket from (clock time, value) samples; `offset` turns the
    samples' clock into wall time (`now` is wall time); `counted` names what the samples are."""
    t, ttft50, ttft90 = percentiles(ttft, now - offset)
    _, tpot50, tpot90 = percentiles(tpot, now - offset)
    return {"t": [round(x + offset, 3) for x in t], "ttft_p50": ttft50, "ttft_p90": ttft90, "tpot_p50": tpot50,
            "tpot_p90": tpot90, "count": sum(1 for at, _ in ttft if at >= now - offset - PLOT_WINDOW_S),
            "counted": counted}


class GatewayBoard:
    """What the gateway's dashboard shows beyond `gateway.state()`: requests and errors it counted, the
    controller's changes it saw, tenants' spend today (cached a few seconds)."""

    def __init__(self, gateway, clock=time.time):
        from infercloud.gateway.metrics import slo_targets

        self.gateway = gateway
        self.clock = clock
        self.slo = {m.name: slo_targets(m) for m in gateway.config.models}
        self.requests: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.errors: deque[dict] = deque(maxlen=MAX_ERRORS)
        self.events: deque[dict] = deque(maxlen=MAX_EVENTS)
        self._seen_targets: dict[str, int] | None = None
        self._last_change = float("-inf")    # the newest controller change on the timeline (its time)
        self._seen_replicas: dict[str, tuple[str, str]] | None = None   # id -> (model, state)
        self._sampler: asyncio.Task | None = None
        self._tenants: tuple[float, list[dict] | None] = (float("-inf"), None)

    # -- fed by the gateway ---------------------------------------------------------------------------
    def request_done(self, model: str, path: str, status: int, tenant: str | None, answer: Any = None) -> None:
        """Every answered request (Gateway._count): counted per model; a non-2xx one kept among the last, with
        its OpenAI-style error code, type and message when the answer (a response or an APIError) has them."""
        self.requests[model] += 1
        if status >= 400:
            self.failed[model] += 1
            self.errors.append({"time": self.clock(), "model": model, "path": path, "status": status,
                                "tenant": tenant, **error_fields(answer)})

    # -- the controller's changes, sampled ------------------------------------------------------------
    def start_sampling(self) -> None:
        """Sample targets and replica states once a second from now on (the first dashboard request)."""
        if self._sampler is None or self._sampler.done():
            self.sample()
            self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self.sample()

    def sample(self) -> None:
        """The controller's target changes (with the autoscaler's reason, from its own record: those made before
        the first look too) and the replicas' state changes (seen here, once a second)."""
        control = self.gateway.control_state() if self.gateway.control_state is not None else {}
        targets = dict(control.get("targets") or {})
        replicas = {rec.replica_id: (rec.model, rec.state) for rec in (r.record() for r in self.gateway.fleet.all())}
        now = self.clock()
        for change in control.get("changes") or ():
            if change["time"] > self._last_change:
                self.events.append({"time": change["time"], "model": change["model"], "kind": "target",
                                    "text": f"target {change['before']} \u2192 {change['after']} replicas",
                                    "reason": change["reason"]})
                self._last_change = change["time"]
        if self._seen_targets is None:   # the first look: where things stand
            for model, target in targets.items():
                self.events.append({"time": now, "model": model, "kind": "target", "text": f"target {target} replicas"})
            for rid, (model, state) in replicas.items():
                self.events.append({"time": now, "model": model, "kind": "replica", "text": f"{rid} {state}"})
        if self._seen_replicas is not None:
            for rid, (model, state) in replicas.items():
                before = self._seen_replicas.get(rid)
                if before is None:
                    self.events.append({"time": now, "model": model, "kind": "replica",
                                        "text": f"{rid} added ({state})"})
                elif before[1] != state:
                    self.events.append({"time": now, "model": model, "kind": "replica",
                                        "text": f"{rid} {before[1]} \u2192 {state}"})
            for rid, (model, _) in self._seen_replicas.items():
                if rid not in replicas:
                    self.events.append({"time": now, "model": model, "kind": "replica", "text": f"{rid} removed"})
        self._seen_targets, self._seen_replicas = targets, replicas

    # -- the summary ----------------------------------------------------------------------------------
    async def data(self) -> dict:
        self.start_sampling()
        state = self.gateway.state()
        now = self.clock()
        replicas = [_replica(r) for r in state["replicas"]]
        targets = state.get("targets") or {}
        latency = self._latency(now)
        models = []
        for spec in self.gateway.config.models:
            mine = [r for r in replicas if r["model"] == spec.name]
            ttft, tpot = self.slo.get(spec.name, (None, None))
            models.append({
                "name": spec.name, "kind": spec.kind, "routing": spec.routing, "pool": spec.pool,
                "regions": spec.regions, "external": len(spec.external),
                "ready": sum(r["state"] == "ready" for r in mine), "replicas": len(mine),
                "target": targets.get(spec.name), "autoscaling": spec.autoscaling is not None,
                "outstanding": sum(r["outstanding_requests"] or 0 for r in mine),
                "requests": self.requests[spec.name], "errors": self.failed[spec.name],
                "slo": {"ttft_s": ttft, "tpot_s": tpot}, "latency": latency.get(spec.name)})
        regions: dict[str, dict] = {}
        for r in replicas:
            entry = regions.setdefault(r["region"] or "-", {"region": r["region"] or "-", "replicas": 0, "ready": 0,
                                                            "outstanding": 0})
            entry["replicas"] += 1
            entry["ready"] += r["state"] == "ready"
            entry["outstanding"] += r["outstanding_requests"] or 0
        return {"role": "gateway", "time": now, "uptime_s": state["uptime_s"], "draining": state["draining"],
                "in_flight": state["in_flight"], "requests": sum(self.requests.values()),
                "errors_total": sum(self.failed.values()), "models": models, "replicas": replicas,
                "pools": [_pool_worker(w) for w in state.get("pool_workers") or ()],
                "regions": sorted(regions.values(), key=lambda e: e["region"]),
                "nodes": list(state.get("nodes") or ()), "timeline": sorted(self.events, key=lambda e: -e["time"]),
                "errors": list(self.errors)[::-1], "tenants": await self._tenants_today(now),
                "tenancy": self.gateway.tenancy is not None}

    def _latency(self, now: float) -> dict[str, dict]:
        traffic = self.gateway.traffic
        offset = now - traffic.clock()   # the samples' clock (monotonic) to wall time
        return {spec.name: latency_series(*traffic.latencies(spec.name), now, offset, "streams")
                for spec in self.gateway.config.models if spec.kind == "chat"}

    async def _tenants_today(self, now: float) -> list[dict] | None:
        """Per tenant: requests, tokens and cost since UTC midnight, from the ledger (None without tenancy)."""
        tenancy = self.gateway.tenancy
        if tenancy is None:
            return None
        at, rows = self._tenants
        if now - at < TENANTS_CACHE_S and rows is not None:
            return rows
        from infercloud.metering.reports import period_start, usage_report

        def read() -> list[dict]:
            midnight = period_start("day", dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
            names = {t.id: t.name for t in tenancy.store.list_tenants()}
            report = usage_report(tenancy.engine, "tenant", since=midnight)
            return sorted(({"tenant": names.get(int(r["tenant"]), r["tenant"]), "requests": r["requests"],
                            "prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
                            "cost_usd": r["cost_usd"]} for r in report), key=lambda r: -r["cost_usd"])

        rows = await asyncio.to_thread(read)
        self._tenants = (now, rows)
        return rows


def error_fields(answer: Any) -> dict:
    """`code`, `type` and `message` (cut to 200 characters) of an OpenAI-style error: an APIError's, or one in
    a JSON response's body; {} for anything else (a stream, a body that is not such an error)."""
    if hasattr(answer, "body") and callable(answer.body):            # an APIError
        error = answer.body()["error"]
    else:
        try:
            error = json.loads(answer.body).get("error") if isinstance(getattr(answer, "body", None), bytes) else None
        except (ValueError, AttributeError):
            error = None
    if not isinstance(error, dict):
        return {}
    message = error.get("message")
    return {"code": error.get("code"), "type": error.get("type"),
            "message": message[:200] if isinstance(message, str) else None}


def _replica(r: dict) -> dict:
    engine = r.get("engine") or {}
    return {"replica_id": r["replica_id"], "model": r["model"], "state": r["state"], "region": r.get("region"),
            "worker": r.get("worker"), "external": r.get("external", False),
            "outstanding_requests": r.get("outstanding_requests"), "outstanding_tokens": r.get("outstanding_tokens"),
            "running": engine.get("running"), "waiting": engine.get("waiting"),
            "kv_used": engine.get("kv_blocks_used"), "kv_total": engine.get("kv_blocks_total"),
            "generated_tokens": engine.get("generated_tokens")}


def _pool_worker(w: dict) -> dict:
    return {"worker_id": w.get("worker_id"), "pool": w.get("pool"), "state": w.get("state"),
            "region": w.get("region"), "models": list(w.get("models") or ())}


def worker_data(worker) -> dict:
    """The single box's summary: each model's engine load, the tokens it generated, and for a chat model the
    TTFT and TPOT p50/p90 of its recent requests against its SLO (as the gateway's plots, from the engine's
    timestamps)."""
    state = worker.state()
    now = time.time()
    models = []
    for name, m in state.models.items():
        entry = {"name": name, "kind": m.kind, "loaded": m.loaded, "in_flight": m.in_flight,
                 "running": m.running, "waiting": m.waiting, "kv_used": m.kv_blocks_used,
                 "kv_total": m.kv_blocks_total, "step_time_s": m.step_time_s,
                 "generated_tokens": m.generated_tokens, "prefix_cache_hit_rate": m.prefix_cache_hit_rate}
        service = worker.chat.get(name)
        if service is not None:
            recent = list(service.recent)
            slo = worker.known[name].slo
            entry["slo"] = {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s}
            entry["latency"] = latency_series([(at, ttft) for at, ttft, _ in recent],
                                              [(at, tpot) for at, _, tpot in recent if tpot is not None],
                                              now, now - service.clock(), "requests")
        models.append(entry)
    for name, m in state.unloaded.items():
        models.append({"name": name, "kind": m.kind, "loaded": False})
    return {"role": "worker", "time": now, "uptime_s": state.uptime_s, "draining": state.draining,
            "in_flight": state.in_flight, "device": state.device, "memory_used_bytes": state.memory_used_bytes,
            "memory_budget_bytes": state.memory_budget_bytes, "models": models}


def install_dashboard(app: FastAPI, server: Any) -> None:
    """The page, its files and /dashboard/data on a gateway (a `Gateway`) or a single box (a `Worker`).
    /dashboard/data is not public: the server's RequestGuard asks for the same credential as /metrics."""
    if getattr(server, "planner", None) is not None:    # a gateway
        board = server.dashboard = GatewayBoard(server)

        async def data() -> dict:
            return await board.data()
    else:
        async def data() -> dict:
            return worker_data(server)

    @app.get(PAGE_PATH, include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get(STATIC_PREFIX + "{name}", include_in_schema=False)
    async def static(name: str):
        if name not in STATIC_FILES:
            return Response(status_code=404)
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    @app.get(DATA_PATH, include_in_schema=False)
    async def dashboard_data():
        return JSONResponse(await data(), headers={"Cache-Control": "no-store"})
