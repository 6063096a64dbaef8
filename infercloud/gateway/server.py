"""serve_cloud: the gateway, the controller and the workers it starts, under one uvicorn process.

Start: the controller launches every model's replicas through the cluster backend and the gateway
binds once each model has a ready replica. SIGTERM: the gateway drains (new requests 503, streams in
flight finish), then every worker is drained and stopped, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import random
from contextlib import asynccontextmanager

import httpx
import uvicorn

from infercloud.cluster.local import LocalBackend
from infercloud.config import ServerConfig
from infercloud.controller.controller import Controller
from infercloud.controller.replicas import ReplicaSet
from infercloud.gateway.app import Gateway, build_app
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.gateway.planner import RoutePlanner
from infercloud.gateway.proxy import Proxy
from infercloud.models.catalog import infercloud_home
from infercloud.openai.asgi import DrainingServer

log = logging.getLogger("infercloud.gateway")


def http_client() -> httpx.AsyncClient:
    """One pooled client for every replica: no connection limit, long reads (streams), quick connects."""
    return httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
                             timeout=httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=60.0))


def serve_cloud(config: ServerConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per probe
    replicas = ReplicaSet()
    gw = config.gateway
    planner = RoutePlanner(config.models, gw.default_max_tokens, random.Random(), gw.prefix_margin_tokens,
                           gw.prefix_margin_ratio)
    gateway = Gateway(config, replicas, planner)
    gateway.metrics = GatewayMetrics(replicas.all)
    backend = LocalBackend(infercloud_home() / "run" / f"gateway-{config.port}-{os.getpid()}")

    @asynccontextmanager
    async def lifespan(_app):
        client = http_client()
        gateway.proxy = Proxy(replicas, planner, client, gw, gateway.metrics)
        controller = Controller(config, backend, replicas, client)
        await controller.start()
        if not await controller.wait_ready(config.cluster.startup_timeout_s):
            log.warning("not every model has a ready replica yet; serving what is ready")
        url = f"http://{config.host}:{config.port}"
        summary = ", ".join(f"{m.name} x{len(replicas.of(m.name))} ({m.routing})" for m in config.models)
        print(f"infercloud gateway on {url}: {summary}; workers log to {backend.run_dir}", flush=True)
        try:
            yield
        finally:
            await controller.stop()
            await client.aclose()

    app = build_app(gateway, lifespan)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                               timeout_graceful_shutdown=1)
    DrainingServer(uv_config, gateway).run()
    return 0
