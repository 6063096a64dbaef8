"""The cloud end to end: a gateway, a controller and real SmolLM2 worker processes on 127.0.0.1.

Tests run in file order on one cloud; the last one stops the gateway with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import httpx
from openai import AsyncOpenAI, OpenAI

from tests.e2e.conftest import SMOL, ready_replicas, replicas, wait_for

STORY = "Write a long story about the number {}."


def _routed(gateway, model: str) -> dict[str, int]:
    return {r["replica_id"]: r["num_routed"] for r in replicas(gateway, model)}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def _metric(gateway, name: str, model: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", headers=gateway.auth, timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_round_robin_spreads_evenly(cloud):
    client = OpenAI(base_url=f"{cloud.url}/v1", api_key="unused")
    before = _routed(cloud, SMOL)
    for i in range(30):
        client.completions.create(model=SMOL, prompt=f"Count to {i}:", max_tokens=1)
    assert sorted(_delta(before, _routed(cloud, SMOL)).values()) == [10, 10, 10]


def test_prefix_aware_keeps_a_prefix_on_one_replica(cloud):
    client = OpenAI(base_url=f"{cloud.url}/v1", api_key="unused")
    workers = {r["replica_id"]: r["url"] for r in replicas(cloud, "smol-prefix")}

    def hit_tokens() -> dict[str, int]:
        return {rid: httpx.get(f"{url}/internal/state", headers=cloud.auth, timeout=10).json()["models"]["smol-prefix"]
                ["prefix_cache_hit_tokens"] for rid, url in workers.items()}

    for topic in ("astronomy", "cooking"):
        system = f"You are a patient expert in {topic}. " + " ".join(f"Rule {i}: answer about {topic} clearly."
                                                                    for i in range(40))
        routed, hits = _routed(cloud, "smol-prefix"), hit_tokens()
        for q in range(8):
            client.chat.completions.create(model="smol-prefix", max_tokens=1, messages=[
                {"role": "system", "content": system}, {"role": "user", "content": f"Question {q}?"}])
        counts = _delta(routed, _routed(cloud, "smol-prefix"))
        assert sorted(counts.values()) == [0, 0, 8], counts       # all 8 on one replica
        home = max(counts, key=counts.get)
        gained = _delta(hits, hit_tokens())
        assert gained[home] >= 7 * 300, gained                    # 7 of 8 reused a 300+-token prefix
        assert all(v == 0 for k, v in gained.items() if k != home)


async def _stream(client: AsyncOpenAI, i: int, progress: list[int] | None = None) -> str:
    stream = await client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": STORY.format(i)}], max_tokens=40, temperature=0,
        stream=True, extra_body={"ignore_eos": True})
    text = ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            if progress is not None:
                progress[i] += 1
    return text


def test_kill_9_of_a_worker_during_16_streams_loses_nothing(cloud):
    async def main():
        client = AsyncOpenAI(base_url=f"{cloud.url}/v1", api_key="unused", max_retries=0)
        reference = await asyncio.gather(*(_stream(client, i) for i in range(16)))
        progress = [0] * 16
        run = asyncio.gather(*(_stream(client, i, progress) for i in range(16)))
        while min(progress) < 3:
            await asyncio.sleep(0.02)
        state = await asyncio.to_thread(replicas, cloud, SMOL)
        victim = max(state, key=lambda r: r["outstanding_requests"])
        os.kill(victim["pid"], signal.SIGKILL)
        return reference, await run, victim

    migrations = _metric(cloud, "infercloud_gateway_migrations_total", SMOL)
    reference, disturbed, victim = asyncio.run(main())
    assert victim["outstanding_requests"] >= 1
    assert disturbed == reference                                   # no error, no repeated or missing token
    assert _metric(cloud, "infercloud_gateway_migrations_total", SMOL) - migrations >= victim["outstanding_requests"]
    wait_for(lambda: ready_replicas(cloud, SMOL) == 3 and victim["replica_id"] not in _routed(cloud, SMOL),
             "the controller to replace the killed worker")


def test_all_replicas_down_is_a_clear_503(cloud):
    for stream in (False, True):
        r = httpx.post(f"{cloud.url}/v1/chat/completions", timeout=30, json={
            "model": "ghost", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "no_replica_available" and "ghost" in error["message"]
        assert r.headers["retry-after"] and r.headers["x-request-id"]
    (ghost,) = replicas(cloud, "ghost")
    assert ghost["state"] != "ready" and ghost["failed_probes"] >= 1


def test_request_id_is_propagated_and_unknown_model_is_404(cloud):
    r = httpx.post(f"{cloud.url}/v1/completions", timeout=30, headers={"X-Request-Id": "my-id-1"},
                   json={"model": SMOL, "prompt": "Hi", "max_tokens": 1})
    assert r.status_code == 200 and r.headers["x-request-id"] == "my-id-1"
    r = httpx.post(f"{cloud.url}/v1/completions", timeout=30, json={"model": "nope", "prompt": "Hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{cloud.url}/v1/completions", timeout=30, content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{cloud.url}/v1/completions", timeout=30, json={"model": SMOL, "prompt": "Hi", "bogus": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "bogus"   # the worker's answer, passed on


def test_sigterm_to_a_worker_drains_it_and_it_is_replaced(cloud, cluster_backend):
    """SIGTERM to a worker process; on Ray, whose actors take SIGTERM as Ray's own, its /internal/drain
    (the same drain: new requests 503, the stream in flight finishes, then it exits)."""
    client = OpenAI(base_url=f"{cloud.url}/v1", api_key="unused", max_retries=0)
    migrations = _metric(cloud, "infercloud_gateway_migrations_total", SMOL)
    stream = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": STORY.format(7)}],
                                            max_tokens=60, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True})
    chunks = iter(stream)
    text = next(chunks).choices[0].delta.content or ""
    (victim,) = [r for r in replicas(cloud, SMOL) if r["outstanding_requests"] == 1]
    if cluster_backend["backend"] == "ray":
        assert httpx.post(f"{victim['url']}/internal/drain", headers=cloud.auth, timeout=10).json()["draining"]
    else:
        os.kill(victim["pid"], signal.SIGTERM)
    text += "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 100
    assert _metric(cloud, "infercloud_gateway_migrations_total", SMOL) == migrations  # it finished there
    wait_for(lambda: ready_replicas(cloud, SMOL) == 3 and victim["replica_id"] not in _routed(cloud, SMOL),
             "the drained worker to be replaced")


def test_external_replica_is_routed_and_health_checked(cloud, external_worker):
    (ext,) = replicas(cloud, "ext-smol")
    assert ext["external"] and ext["state"] == "ready" and ext["url"] == external_worker.url
    client = OpenAI(base_url=f"{cloud.url}/v1", api_key="unused", max_retries=0)
    before = external_worker.state()["models"]["ext-smol"]["generated_tokens"]
    reply = client.chat.completions.create(model="ext-smol", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=5)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="ext-smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True) if c.choices)
    assert reply.choices[0].message.content and streamed
    assert external_worker.state()["models"]["ext-smol"]["generated_tokens"] - before == 10
    external_worker.stop()
    wait_for(lambda: ready_replicas(cloud, "ext-smol") == 0, "the gateway to see the external replica down")
    r = httpx.post(f"{cloud.url}/v1/chat/completions", timeout=30,
                   json={"model": "ext-smol", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503


def test_sigterm_to_the_gateway_lets_streams_finish(cloud):
    client = OpenAI(base_url=f"{cloud.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": STORY.format(3)}],
                                            max_tokens=40, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    pids = [r["pid"] for r in cloud.state()["replicas"] if r["pid"]]
    threading.Timer(0.0, cloud.proc.send_signal, (signal.SIGTERM,)).start()
    rest = [c for c in chunks if c.choices]
    assert rest[-1].choices[0].finish_reason == "length"
    assert cloud.proc.wait(60) == 0
    for pid in pids:                                               # every worker was stopped too
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}") or _zombie(pid), f"worker {pid} to exit", 30)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except OSError:
        return True
