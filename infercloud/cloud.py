"""serve_cloud: the cloud's composition root. The gateway, the controller and the workers it starts, under
one uvicorn process; the only module that wires the gateway to the controller (they share the replica set
and the traffic feed of fleet/, nothing else).

With `gateway.controller_url` set, this gateway runs no controller and starts no workers: it routes over
the replicas of the gateway at that URL, which runs the controller (gateway/link.py).

Start: the controller launches every model's replicas through the cluster backend and the gateway
binds once each model has a ready replica. SIGTERM: the gateway drains (new requests 503, streams in
flight finish), then every worker is drained and stopped, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from contextlib import asynccontextmanager

import aiohttp
import uvicorn

from infercloud.cluster.base import ClusterBackend
from infercloud.cluster.local import LocalBackend
from infercloud.config import ServerConfig
from infercloud.controller.controller import Controller
from infercloud.fleet.replicas import ReplicaSet
from infercloud.fleet.traffic import Traffic
from infercloud.gateway.accounting import Tenancy
from infercloud.gateway.app import Gateway, build_app
from infercloud.gateway.link import ControllerLink
from infercloud.gateway.load_book import LoadBook
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.gateway.planner import RoutePlanner
from infercloud.gateway.proxy import Proxy
from infercloud.internal_token import bearer
from infercloud.openai.asgi import DrainingServer
from infercloud.paths import infercloud_home
from infercloud.router.regions import RegionMap
from infercloud.cache.response_cache import ResponseCache
from infercloud.gateway.caching import GatewayCache
from infercloud.gateway.calls import gateway_embed, gateway_judge
from infercloud.gateway.sampling import Sampler
from infercloud.evaluation.service import Evaluation
from infercloud.gateway.governance import Governance
from infercloud.observability.tracing import Tracing
from infercloud.policy.book import PolicyBook
from infercloud.store.database import default_database_url, open_database

log = logging.getLogger("infercloud.gateway")
EVALUATION_DRAIN_S = 10.0


def http_client() -> aiohttp.ClientSession:
    """One pooled client for every replica (aiohttp: a third of httpx's per-request cost on the hot path).

    No connection limit, quick connects, long reads (a stream may wait on a long prefill). Idle pooled
    connections close after 30 s, before workers close theirs (75 s), so none is used as it closes.
    """
    timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=600.0)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30), timeout=timeout,
                                 auto_decompress=False)


def serve_cloud(config: ServerConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fleet, traffic = ReplicaSet(), Traffic(time.monotonic)
    gw = config.gateway
    book = LoadBook(fleet, gw.recent_routes)
    planner = RoutePlanner(config.models, gw.default_max_tokens, random.Random(), gw.prefix_margin_tokens,
                           gw.prefix_margin_ratio, tokenize_all=config.tenancy is not None,
                           max_model_len=lambda model: _max_model_len(fleet, model))
    gateway = Gateway(config, fleet, traffic, book, planner)
    gateway.metrics = GatewayMetrics(fleet, book, config.models)
    traffic.on_stream_done = gateway.metrics.stream_done
    gateway.tracing = Tracing.of(config.tracing, "infercloud-gateway")
    if config.cache.is_enabled:
        gateway.cache = GatewayCache(ResponseCache.from_spec(config.cache), gateway_embed(gateway),
                                     lambda model, result: gateway.metrics.cache.labels(model, result).inc())
    if config.tenancy is not None:
        database = config.tenancy.database or default_database_url()
        gateway.tenancy = Tenancy(config.tenancy, config.models, open_database(database))
        gateway.governance = Governance(PolicyBook(config.policies, gateway.tenancy.engine,
                                                   config.tenancy.auth_cache_s), gateway.tenancy.audit,
                                        gateway.metrics.policy_decision)
    if config.evaluations:
        engine = gateway.tenancy.engine if gateway.tenancy is not None else open_database(default_database_url())
        gateway.sampler = Sampler(Evaluation(config.evaluations, engine, gateway_judge(gateway), random.Random(),
                                             registry=gateway.metrics.registry))
    backend = make_backend(config) if gw.controller_url is None else None

    @asynccontextmanager
    async def lifespan(_app):
        client = http_client()
        gateway.proxy = Proxy(fleet, book, traffic, planner, client, gw, gateway.metrics,
                              RegionMap.from_specs(config.regions), bearer(config.internal_token), gateway.tracing)
        if gateway.tenancy is not None:
            await gateway.tenancy.start()
        if gateway.sampler is not None:
            gateway.sampler.evaluation.start()
        if backend is not None:
            controller = Controller(config, backend, fleet, traffic, client)
            controller.on_decision = gateway.metrics.autoscaler_decision
            traffic.on_want, gateway.sync = controller.wake, controller.sync
            gateway.control_state = lambda: controller.control_state().model_dump()
            await controller.start()
            if not await controller.wait_ready(config.cluster_spec.startup_timeout_s):
                log.warning("not every model has a ready replica yet; serving what is ready")
            workers = _workers_line(backend)
        else:                                      # another gateway runs the controller: mirror its replicas
            controller = ControllerLink(gw.controller_url, fleet, traffic, [m.name for m in config.models], client,
                                        f"gateway-{config.port}-{os.getpid()}", gw.sync_interval_s,
                                        config.internal_token)
            traffic.on_want, gateway.control_state = controller.want, controller.public_state
            await controller.start(config.cluster_spec.startup_timeout_s)
            workers = f"replicas from the controller at {gw.controller_url}"
        url = f"http://{config.host}:{config.port}"
        summary = ", ".join(f"{m.name} x{len(fleet.of(m.name))} ({m.routing})" for m in config.models)
        print(f"infercloud gateway on {url}: {summary}; {workers}", flush=True)
        print(_auth_line(config), flush=True)
        try:
            yield
        finally:
            if gateway.sampler is not None:   # what is queued is scored, for a while
                try:
                    await asyncio.wait_for(gateway.sampler.evaluation.close(), EVALUATION_DRAIN_S)
                except asyncio.TimeoutError:
                    log.warning("evaluation: samples still queued at shutdown were not scored")
            await controller.stop()
            if gateway.cache is not None:
                await gateway.cache.close()
            if gateway.tenancy is not None:
                await gateway.tenancy.close()
            await client.close()
            if gateway.tracing is not None:
                gateway.tracing.shutdown()

    app = build_app(gateway, lifespan)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                               timeout_graceful_shutdown=1)
    DrainingServer(uv_config, gateway).run()
    return 0


def make_backend(config: ServerConfig) -> ClusterBackend:
    """The cluster backend the config names: local subprocesses, or Ray actors (imported only then)."""
    cluster = config.cluster_spec
    if cluster.backend == "ray":
        from infercloud.cluster.ray import RayBackend

        return RayBackend(cluster.address, cluster.placement_timeout_s)
    return LocalBackend(infercloud_home() / "run" / f"gateway-{config.port}-{os.getpid()}", region=cluster.region)


def _workers_line(backend: ClusterBackend) -> str:
    if isinstance(backend, LocalBackend):
        return f"workers log to {backend.run_dir}"
    nodes = backend.nodes()
    regions = sorted({n.region for n in nodes if n.region})
    return f"workers are Ray actors on {len(nodes)} nodes" + (f" ({', '.join(regions)})" if regions else "")


def _auth_line(config: ServerConfig) -> str:
    if config.tenancy is None:
        return ("auth: OFF - no `tenancy` section, so /v1 needs no API key; serving on loopback only "
                "(declare tenancy to require keys)")
    database = config.tenancy.database or default_database_url()
    return (f"auth: API keys required on /v1, admin keys on /admin; tenants, keys and the usage ledger in "
            f"{_hide_password(database)}")


def _hide_password(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def _max_model_len(fleet: ReplicaSet, model: str) -> int | None:
    for replica in fleet.of(model):
        if replica.engine is not None and replica.engine.max_model_len:
            return replica.engine.max_model_len
    return None
