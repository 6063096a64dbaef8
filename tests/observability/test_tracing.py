"""Traces across processes: a real OTLP/HTTP receiver started here, a gateway with two SmolLM2 workers sending
their spans to it, and a client's W3C traceparent. One request's span tree must run from the client's span
through the gateway (auth, route, gateway.attempt) to the worker (worker.request: queue, prefill with one chunk per
engine step, decode with the detokenizer's time); a stream whose worker is killed must show both attempts,
the second resuming, and the killed worker's prefill."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import signal
import threading

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                       ExportTraceServiceResponse)

from infercloud.observability.tracing import Tracing
from infercloud.observability.tracing_spec import TracingSpec
from tests.e2e.conftest import replicas, wait_for
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    def __init__(self):
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):   # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                receiver.add(export)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, export: ExportTraceServiceRequest) -> None:
        found = []
        for resource in export.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                for s in scope.spans:
                    attrs = {a.key: json.loads(_value(a.value)) for a in s.attributes}
                    found.append({"trace": s.trace_id.hex(), "id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                                  "name": s.name, "service": service, "attrs": attrs, "error": s.status.code == 2,
                                  "start": s.start_time_unix_nano, "end": s.end_time_unix_nano})
        with self.lock:
            self.spans += found

    def trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["trace"] == trace_id]


def _value(v) -> str:
    kind = v.WhichOneof("value")
    return json.dumps(getattr(v, kind)) if kind in ("string_value", "bool_value", "int_value", "double_value") \
        else "null"


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, receiver, smollm2_dir):
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "probe_timeout_s": 2.0, "unhealthy_after": 2},
        "gateway": {"max_attempts": 3, "retry_backoff_s": 0.05},
        "tracing": {"otlp_endpoint": receiver.url, "export_delay_s": 0.1},
        "models": [{"name": SMOL, "replicas": 2, "routing": "round_robin",
                    "engine": {"kv_cache_memory_gb": 0.1, "max_num_batched_tokens": 64}},   # prompts in chunks
                   # no replica until a request comes: it is held while one starts
                   {"name": "cold", "path": SMOL, "replicas": 0, "engine": {"kv_cache_memory_gb": 0.05},
                    "autoscaling": {"min_replicas": 0, "max_replicas": 1, "idle_to_zero_s": 600}}],
    }
    server = start_server(tmp_path_factory.mktemp("tracing"), config, startup_timeout_s=300)
    yield server
    assert server.stop() == 0, server.log()


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def children(spans: list[dict], parent: dict, name: str | None = None) -> list[dict]:
    return [s for s in spans if s["parent"] == parent["id"] and (name is None or s["name"] == name)]


def test_tracing_is_off_unless_an_endpoint_is_configured():
    assert Tracing.of(TracingSpec(), "infercloud-gateway") is None


def test_one_request_is_one_span_tree_from_the_client_through_the_gateway_to_the_worker(gw, receiver):
    trace_id, client_span, header = traceparent()
    words = " ".join(f"w{i}" for i in range(80))
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"traceparent": header}, timeout=60,
                   json={"model": SMOL, "messages": [{"role": "user", "content": f"Say hi. {words}"}],
                         "max_tokens": 4})
    assert r.status_code == 200
    usage = r.json()["usage"]

    def tree_complete() -> bool:
        return any(s["name"] == "decode" for s in receiver.trace(trace_id)) and \
            any(s["name"] == "gateway.request" for s in receiver.trace(trace_id))

    wait_for(tree_complete, "the request's spans from the gateway and the worker", 30)
    spans = receiver.trace(trace_id)
    (root,) = [s for s in spans if s["name"] == "gateway.request"]
    assert root["parent"] == client_span and root["service"] == "infercloud-gateway"
    assert root["attrs"]["infercloud.model"] == SMOL and root["attrs"]["http.status_code"] == 200
    assert root["attrs"]["infercloud.request_id"] == r.headers["x-request-id"]
    assert children(spans, root, "auth")
    (attempt,) = children(spans, root, "gateway.attempt")
    assert attempt["attrs"]["infercloud.replica"] == r.headers["x-infercloud-replica"]
    assert attempt["attrs"]["outcome"] == "completed"
    (route,) = children(spans, root, "route")           # the replica chosen, by round_robin, not held
    assert route["attrs"] == {"infercloud.routing": "round_robin", "infercloud.held": False,
                              "infercloud.replica": r.headers["x-infercloud-replica"]}
    assert route["end"] <= attempt["start"]
    (worker,) = children(spans, attempt, "worker.request")
    assert worker["service"] == "infercloud-worker" and worker["attrs"]["outcome"] == "ok"
    assert sorted(s["name"] for s in children(spans, worker)) == ["decode", "prefill", "queue"]
    queue, prefill, decode = (children(spans, worker, n)[0] for n in ("queue", "prefill", "decode"))
    assert worker["start"] <= queue["start"] <= queue["end"] <= prefill["end"] <= decode["end"] <= worker["end"]
    assert root["start"] <= worker["start"] and worker["end"] <= root["end"]
    # the prompt was computed in chunks of at most 64 tokens, one engine step each, inside the prefill
    chunks = sorted(children(spans, prefill, "prefill.chunk"), key=lambda s: s["start"])
    computed = usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]
    assert len(chunks) == -(-computed // 64) >= 2
    assert [c["attrs"]["infercloud.tokens"] for c in chunks] == [64] * (len(chunks) - 1) + [computed % 64 or 64]
    assert [c["attrs"]["infercloud.chunk"] for c in chunks] == list(range(len(chunks)))
    assert all(prefill["start"] <= c["start"] < c["end"] <= prefill["end"] for c in chunks)
    assert all(a["end"] <= b["start"] for a, b in zip(chunks, chunks[1:]))
    assert chunks[-1]["end"] == prefill["end"]          # the last chunk's step sampled the first token
    # the detokenizer's summed time over the reply's tokens, inside the decode
    (detok,) = children(spans, decode, "detokenize")
    assert detok["attrs"]["infercloud.tokens"] == usage["completion_tokens"] == decode["attrs"]["infercloud.tokens"]
    assert decode["start"] == detok["start"] < detok["end"] <= decode["end"]


def test_a_migrated_stream_shows_both_attempts_and_both_workers(gw, receiver):
    trace_id, client_span, header = traceparent()
    body = {"model": SMOL, "messages": [{"role": "user", "content": "Count from one to one hundred in words."}],
            "max_tokens": 64, "ignore_eos": True, "temperature": 0, "stream": True}
    wait_for(lambda: all(r["state"] == "ready" for r in replicas(gw, SMOL)) and len(replicas(gw, SMOL)) == 2,
             "both replicas ready")
    tokens = 0
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers={"traceparent": header},
                      timeout=120) as r:
        first = r.headers["x-infercloud-replica"]
        victim = next(rep for rep in replicas(gw, SMOL) if rep["replica_id"] == first)
        for line in r.iter_lines():
            if line.startswith("data: {"):
                tokens += 1
                if tokens == 8:
                    wait_for(lambda: any(s["name"] == "prefill" and s["service"] == "infercloud-worker"
                                         for s in receiver.trace(trace_id)), "the first worker's prefill span", 10)
                    os.kill(victim["pid"], signal.SIGKILL)
    assert tokens >= 60

    def tree_complete() -> bool:
        spans = receiver.trace(trace_id)
        return any(s["name"] == "gateway.request" for s in spans) and \
            sum(s["name"] == "gateway.attempt" for s in spans) == 2 and \
            any(s["name"] == "decode" for s in spans)

    wait_for(tree_complete, "the stream's spans", 30)
    spans = receiver.trace(trace_id)
    (root,) = [s for s in spans if s["name"] == "gateway.request"]
    assert root["parent"] == client_span
    attempts = sorted(children(spans, root, "gateway.attempt"), key=lambda s: s["start"])
    assert [(a["attrs"]["infercloud.replica"] == first, a["attrs"]["outcome"]) for a in attempts] == \
        [(True, "migrated"), (False, "completed")]
    routes = sorted(children(spans, root, "route"), key=lambda s: s["start"])    # one choice per attempt
    assert [r["attrs"].get("infercloud.replica") for r in routes] == \
        [a["attrs"]["infercloud.replica"] for a in attempts]
    assert attempts[0]["attrs"]["infercloud.resumed_tokens"] == 0
    assert attempts[1]["attrs"]["infercloud.resumed_tokens"] >= 7   # the 8 chunks read: a role, 7 tokens
    (resumed,) = children(spans, attempts[1], "worker.request")
    assert resumed["attrs"]["infercloud.resumed_tokens"] == attempts[1]["attrs"]["infercloud.resumed_tokens"]
    assert {s["name"] for s in children(spans, resumed)} == {"queue", "prefill", "decode"}
    # the resuming worker computed prompt and resumed tokens as its prefill
    (resumed_prefill,) = children(spans, resumed, "prefill")
    assert children(spans, resumed_prefill, "prefill.chunk")
    # the killed worker never ended its request span, but its prefill was sent at the first token, in this trace
    killed = [s for s in spans if s["name"] == "prefill" and s["parent"] != resumed["id"]]
    assert len(killed) == 1 and killed[0]["service"] == "infercloud-worker"


def test_a_request_held_for_a_model_scaled_to_zero_shows_the_wait_in_its_route_span(gw, receiver):
    trace_id, _, header = traceparent()
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"traceparent": header}, timeout=300,
                   json={"model": "cold", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2})
    assert r.status_code == 200, r.text
    wait_for(lambda: any(s["name"] == "gateway.request" for s in receiver.trace(trace_id)), "the request's span", 30)
    spans = receiver.trace(trace_id)
    (root,) = [s for s in spans if s["name"] == "gateway.request"]
    (route,) = children(spans, root, "route")
    (attempt,) = children(spans, root, "gateway.attempt")
    assert route["attrs"]["infercloud.held"] is True
    assert route["attrs"]["infercloud.replica"] == attempt["attrs"]["infercloud.replica"] == \
        r.headers["x-infercloud-replica"]
    # the wait for the replica to start is most of the request's time, and it is the route span's
    assert route["end"] <= attempt["start"] and route["end"] - route["start"] > attempt["end"] - attempt["start"]
