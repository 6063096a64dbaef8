"""A constrained stream survives its worker's kill -9: the gateway resumes it on the other replica, whose engine
replays the delivered tokens through the request's grammar, so the client still gets exactly one document
that validates, the same text an unbroken greedy stream gives.

A gateway with 2 SmolLM2 replicas (local worker processes). Two requests: a JSON-schema `response_format`
whose reply is an array of several objects (minItems), and a forced tool call (the stream's tool-call deltas,
reassembled, must equal the unbroken stream's call).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

import httpx
import pytest
from jsonschema import Draft202012Validator
from openai import AsyncOpenAI

from tests.e2e.conftest import ready_replicas, replicas, wait_for
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"

ORDER = {
    "type": "object", "additionalProperties": False, "required": ["customer", "lines"], "properties": {
        "customer": {"type": "string", "maxLength": 12},
        "lines": {"type": "array", "minItems": 6, "maxItems": 8, "items": {
            "type": "object", "additionalProperties": False, "required": ["item", "qty", "color"], "properties": {
                "item": {"type": "string", "maxLength": 10},
                "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                "color": {"type": "string", "enum": ["red", "green", "blue", "black"]}}}}}}
ORDER_REQUEST = {
    "messages": [{"role": "user", "content": "Write a shop order with several lines as JSON."}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER, "strict": True}},
    "max_tokens": 400, "temperature": 0}

BOOKING = {"type": "object", "additionalProperties": False, "required": ["guests", "nights"], "properties": {
    "guests": {"type": "array", "minItems": 5, "maxItems": 6, "items": {
        "type": "object", "additionalProperties": False, "required": ["name", "age"], "properties": {
            "name": {"type": "string", "maxLength": 10}, "age": {"type": "integer", "minimum": 0, "maximum": 99}}}},
    "nights": {"type": "integer", "minimum": 1, "maximum": 30}}}
BOOK_REQUEST = {
    "messages": [{"role": "user", "content": "Book a hotel for my family."}],
    "tools": [{"type": "function", "function": {"name": "book_hotel", "description": "Book hotel rooms.",
                                                "parameters": BOOKING}}],
    "tool_choice": {"type": "function", "function": {"name": "book_hotel"}}, "max_tokens": 400, "temperature": 0}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, smollm2_dir):
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "probe_timeout_s": 1.0, "unhealthy_after": 2},
        "gateway": {"max_attempts": 3, "retry_backoff_s": 0.05},
        "models": [{"name": SMOL, "replicas": 2, "routing": "least_load", "engine": {"kv_cache_memory_gb": 0.1}}],
    }
    gateway = start_server(tmp_path_factory.mktemp("structured-migration"), config, startup_timeout_s=300)
    wait_for(lambda: ready_replicas(gateway, SMOL) == 2, "both replicas to be ready", timeout_s=300)
    yield gateway
    assert gateway.stop() == 0, gateway.log()


def migrations(cloud) -> float:
    text = httpx.get(f"{cloud.url}/metrics", headers=cloud.auth, timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'infercloud_gateway_migrations_total{{model="{SMOL}"}}'):
            return float(line.split()[-1])
    return 0.0


async def stream(cloud, body: dict, kill_after: int | None = None) -> tuple[str, list[tuple[str, str]], list, dict]:
    """One stream through the gateway: (content, tool calls reassembled by index, finish reasons, the killed
    replica). With `kill_after`, the replica serving it is killed with SIGKILL once that many chunks came."""
    client = AsyncOpenAI(base_url=f"{cloud.url}/v1", api_key="unused", max_retries=0, timeout=600)
    content, calls, finishes, victim, chunks = "", {}, [], {}, 0
    try:
        async for chunk in await client.chat.completions.create(model=SMOL, stream=True, **body):
            for c in chunk.choices:
                content += c.delta.content or ""
                if c.finish_reason:
                    finishes.append(c.finish_reason)
                for d in c.delta.tool_calls or []:
                    if d.index not in calls:
                        assert d.id and d.function.name, d
                        calls[d.index] = [d.function.name, ""]
                    else:
                        assert d.id is None and d.function.name is None, d   # no second opening after the move
                    calls[d.index][1] += d.function.arguments or ""
            chunks += 1
            if kill_after is not None and chunks == kill_after:
                serving = [r for r in await asyncio.to_thread(replicas, cloud, SMOL) if r["outstanding_requests"]]
                assert len(serving) == 1, serving
                victim = serving[0]
                os.kill(victim["pid"], signal.SIGKILL)
    finally:
        await client.close()
    return content, [tuple(c) for c in calls.values()], finishes, victim


def run_both(cloud, body: dict, kill_after: int):
    wait_for(lambda: ready_replicas(cloud, SMOL) == 2, "both replicas to be ready", timeout_s=300)
    before = migrations(cloud)
    reference = asyncio.run(stream(cloud, body))
    disturbed = asyncio.run(stream(cloud, body, kill_after=kill_after))
    victim = disturbed[3]
    assert victim, "no replica was killed: the stream ended first"
    assert migrations(cloud) - before >= 1
    wait_for(lambda: ready_replicas(cloud, SMOL) == 2 and victim["replica_id"] not in
             {r["replica_id"] for r in replicas(cloud, SMOL)}, "the controller to replace the killed worker",
             timeout_s=300)
    return reference, disturbed


@pytest.mark.parametrize("kill_after", [12, 40], ids=["early", "deep"])
def test_a_json_schema_stream_survives_kill_9_of_its_worker(cloud, kill_after):
    (ref_text, _, ref_finish, _), (text, calls, finish, _) = run_both(cloud, ORDER_REQUEST, kill_after)
    assert ref_finish == ["stop"], ref_text
    Draft202012Validator(ORDER).validate(json.loads(ref_text))
    assert len(ref_text) > 150 and len(ref_text) > 2 * kill_after  # the kill lands mid-document
    assert finish == ["stop"] and not calls
    assert text == ref_text                          # no token lost or repeated, nothing after the document
    Draft202012Validator(ORDER).validate(json.loads(text))


@pytest.mark.parametrize("kill_after", [1, 12], ids=["before-the-call-opens", "in-the-arguments"])
def test_a_tool_call_stream_survives_kill_9_of_its_worker(cloud, kill_after):
    """Killed after the role chunk only (the call's opening text generated, or being generated, but held back
    by the parser), or a few argument pieces in."""
    (ref_text, ref_calls, ref_finish, _), (text, calls, finish, _) = run_both(cloud, BOOK_REQUEST, kill_after)
    assert ref_finish == ["tool_calls"] and ref_text == "", (ref_finish, ref_text)
    assert [name for name, _ in ref_calls] == ["book_hotel"]
    Draft202012Validator(BOOKING).validate(json.loads(ref_calls[0][1]))
    assert finish == ["tool_calls"] and text == ""
    assert calls == ref_calls                        # one call, its arguments whole and the same
