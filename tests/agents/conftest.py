"""A single-box server for the agent tests: one real `infercloud serve` process per test module."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator

from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
# one torch thread: on a 2-core box shared with other processes, intra-op threads that wait on each other
# make every step several times slower (measured: 64 constrained replies in 346 s with 2 threads, 40 s with 1)
MODELS = [{"name": SMOL, "engine": {"kv_cache_memory_gb": 1.0, "num_threads": 1}}]


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory, smollm2_dir):
    folder = tmp_path_factory.mktemp("agents")
    proc = start_server(folder, {"models": MODELS, "responses": {"database": f"sqlite:///{folder}/responses.db"}})
    yield proc
    assert proc.stop() == 0, proc.log()


def validate(instance, schema: dict) -> None:
    """jsonschema's verdict, plus strict mode's: no object has a property its schema does not name."""
    Draft202012Validator(schema).validate(instance)
    extra = extra_keys(instance, schema)
    assert not extra, f"properties beyond the schema: {extra} in {instance!r}"


def extra_keys(instance, schema: dict, path: str = "$") -> list[str]:
    if schema.get("type") == "object" and isinstance(instance, dict):
        props = schema.get("properties", {})
        found = [f"{path}.{k}" for k in instance if k not in props]
        for k, v in instance.items():
            if k in props:
                found += extra_keys(v, props[k], f"{path}.{k}")
        return found
    if schema.get("type") == "array" and isinstance(instance, list):
        return [e for i, v in enumerate(instance) for e in extra_keys(v, schema["items"], f"{path}[{i}]")]
    return []


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def free_whitespace(text: str) -> list[int]:
    """Offsets of whitespace in JSON text outside strings, other than the one space after `,` and `:`."""
    outside = _STRING.sub(lambda m: "s" * len(m.group()), text)
    return [i for i, ch in enumerate(outside) if ch.isspace()
            and not (ch == " " and i > 0 and outside[i - 1] in ",:" and not outside[i + 1:i + 2].isspace())]


def loads(text: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise AssertionError(f"not JSON ({exc}): {text!r}") from None


def run_concurrently(server, fn, jobs, limit: int = 32) -> list:
    """`await fn(client, job)` for every job, at most `limit` at a time, in order (one AsyncOpenAI client on
    one event loop: with many threads instead, the client's GIL contention took as much CPU as the server)."""
    import asyncio

    import openai

    async def main() -> list:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=600)
        gate = asyncio.Semaphore(limit)

        async def one(job):
            async with gate:
                return await fn(client, job)

        try:
            return await asyncio.gather(*(one(job) for job in jobs))
        finally:
            await client.close()

    return asyncio.run(main())
