"""Runs a worker under uvicorn; SIGTERM drains (503 to new requests, in-flight ones finish) and exits 0."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from infercloud.config import ServerConfig
from infercloud.worker.app import build_app
from infercloud.worker.worker import Worker

log = logging.getLogger("infercloud.worker")


class DrainingServer(uvicorn.Server):
    """First SIGTERM/SIGINT: start draining; exit once nothing is in flight or the timeout passes.

    A second signal exits at once (uvicorn's own behaviour).
    """

    def __init__(self, config: uvicorn.Config, worker: Worker):
        super().__init__(config)
        self.worker = worker

    def handle_exit(self, sig, frame) -> None:
        if self.worker.draining:
            return super().handle_exit(sig, frame)
        self.worker.draining = True
        log.info("draining: %d requests in flight, up to %.0f s", self.worker.in_flight,
                 self.worker.config.drain_timeout_s)
        threading.Thread(target=self._exit_when_drained, name="drain", daemon=True).start()

    def _exit_when_drained(self) -> None:
        deadline = time.monotonic() + self.worker.config.drain_timeout_s
        while self.worker.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.worker.in_flight:
            log.warning("drain timeout: %d requests still in flight are cut", self.worker.in_flight)
        self.should_exit = True


def serve(config: ServerConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker.create(config)
    app = build_app(worker)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                               timeout_graceful_shutdown=1)
    server = DrainingServer(uv_config, worker)
    url = f"http://{config.host}:{config.port}"
    print(f"infercloud serving {', '.join(worker.model_names)} on {url}", flush=True)
    print(f"try: curl {url}/v1/chat/completions -H 'Content-Type: application/json' -d "
          f"'{{\"model\": \"{next(iter(worker.chat), 'MODEL')}\", \"messages\": [{{\"role\": \"user\", "
          f"\"content\": \"Hello!\"}}]}}'", flush=True)
    try:
        server.run()
    finally:
        worker.shutdown()
    return 0
