"""Runs a worker under uvicorn; SIGTERM drains (503 to new requests, in-flight ones finish) and exits 0."""

from __future__ import annotations

import logging
import signal

import uvicorn

from infercloud.config import WorkerConfig
from infercloud.openai.asgi import DrainingServer
from infercloud.worker.app import build_app
from infercloud.worker.worker import Worker

log = logging.getLogger("infercloud.worker")

# Idle keep-alive connections live this long: longer than the gateway keeps its pooled connections
# (cloud.py), so the gateway never sends a request down a connection the worker just closed.
WORKER_KEEP_ALIVE_S = 75


def make_server(config: WorkerConfig) -> tuple[DrainingServer, Worker]:
    """The worker (its models loaded) and the server that runs it; `server.handle_exit` drains it."""
    worker = Worker.create(config)
    app = build_app(worker)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                               timeout_graceful_shutdown=1,
                               timeout_keep_alive=WORKER_KEEP_ALIVE_S)
    server = DrainingServer(uv_config, worker)
    worker.on_drain = lambda: server.handle_exit(signal.SIGTERM, None) if not worker.draining else None
    return server, worker


def serve(config: WorkerConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server, worker = make_server(config)
    url = f"http://{config.host}:{config.port}"
    print(f"infercloud serving {', '.join(worker.model_names)} on {url}", flush=True)
    if config.internal_only:
        print("auth: a cloud's worker - every route but /health needs the internal token", flush=True)
    else:
        print("auth: OFF - the API needs no key, so it binds loopback only "
              "(a config with a `tenancy` section requires API keys)", flush=True)
    if worker.chat:
        print(f"try: curl {url}/v1/chat/completions -H 'Content-Type: application/json' -d "
              f"'{{\"model\": \"{next(iter(worker.chat))}\", \"max_tokens\": 32, \"messages\": [{{\"role\": "
              f"\"user\", \"content\": \"What is the capital of France?\"}}]}}'", flush=True)
    elif worker.embeddings:
        print(f"try: curl {url}/v1/embeddings -H 'Content-Type: application/json' -d "
              f"'{{\"model\": \"{next(iter(worker.embeddings))}\", \"input\": \"Hello!\"}}'", flush=True)
    try:
        server.run()
    finally:
        worker.shutdown()
    return 0
