"""A stream's chunks (gateway/chunks.py ChunkRewriter) over worker SSE lines, as the relay sets it up for a
request, and the body the relay sends each replica (Relay.content)."""

from __future__ import annotations

import json

import pytest

import random

from infercloud.config import ModelSpec
from infercloud.fleet.replicas import Replica
from infercloud.gateway.facts import RequestFacts, upstream_for
from infercloud.gateway.planner import RoutePlanner
from infercloud.gateway.relay import Relay

PATH = "/v1/chat/completions"
BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def relay(**fields) -> Relay:
    """The relay of one request: its plan from the planner, its bodies as the gateway makes them."""
    facts = RequestFacts.of({**BASE, **fields}, PATH, 100, tier="interactive")
    plan = RoutePlanner((ModelSpec("m", routing="round_robin"),), 256, random.Random(0), 4096, 1.5).plan(facts)
    return Relay(None, plan, PATH, upstream_for(facts, metered=False), {}, clock=lambda: 0.0)


def chunk(content: str | None = "", ids=(), finish=None, cid="chatcmpl-A", role=False, prompt_ids=None,
          logprobs=None, index=0) -> str:
    delta = {"role": "assistant", "content": ""} if role else {"content": content}
    body = {"id": cid, "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish,
                         "token_ids": list(ids)}]}
    if prompt_ids is not None:
        body["prompt_token_ids"] = list(prompt_ids)
    return "data: " + json.dumps(body)


def usage_chunk(cid="chatcmpl-A") -> str:
    return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": 1, "model": "m",
                                  "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                                           "total_tokens": 5}})


def parse(event: str | None) -> dict:
    assert event is not None and event.startswith("data: ") and event.endswith("\n\n")
    return json.loads(event[len("data: "):])


# -- token ids -----------------------------------------------------------------------------------

def test_ids_accumulate_and_are_removed_when_not_asked():
    r = relay()
    first = parse(r.chunks.rewrite(chunk("Hi", ids=[5], prompt_ids=[1, 2, 3])))
    second = parse(r.chunks.rewrite(chunk(" there", ids=[6, 7])))
    assert r.chunks.delivered == [5, 6, 7]
    for event in (first, second):
        assert "prompt_token_ids" not in event
        assert all("token_ids" not in c for c in event["choices"])
    assert [c["delta"]["content"] for c in (first["choices"][0], second["choices"][0])] == ["Hi", " there"]


def test_ids_kept_when_asked_and_prompt_ids_only_once():
    r = relay(return_token_ids=True)
    first = parse(r.chunks.rewrite(chunk("Hi", ids=[5], prompt_ids=[1, 2, 3])))
    assert first["prompt_token_ids"] == [1, 2, 3]
    assert first["choices"][0]["token_ids"] == [5]
    # after a migration the new replica sends the prompt's ids again: the client already has them
    again = parse(r.chunks.rewrite(chunk(" there", ids=[6], cid="chatcmpl-B", prompt_ids=[1, 2, 3])))
    assert "prompt_token_ids" not in again
    assert again["choices"][0]["token_ids"] == [6]
    assert r.chunks.delivered == [5, 6]


def test_ids_only_chunk_dropped_unless_asked_but_counted():
    r = relay()
    assert r.chunks.rewrite(chunk("", ids=[9])) is None
    assert r.chunks.delivered == [9]

    asked = relay(return_token_ids=True)
    event = parse(asked.chunks.rewrite(chunk("", ids=[9])))
    assert event["choices"][0]["token_ids"] == [9]
    assert asked.chunks.delivered == [9]


def test_client_given_resume_ids_seed_delivered():
    r = relay(resume_token_ids=[1, 2])
    r.chunks.rewrite(chunk("x", ids=[3]))
    assert r.chunks.delivered == [1, 2, 3]


def test_client_given_resume_ids_are_billed_by_the_first_attempt():
    """Only tokens the gateway itself resumed after a migration go unbilled: a client's own resume ids
    are processed by the worker like a prompt, so they are billed, never a free prompt."""
    assert relay(resume_token_ids=[1, 2]).num_resumed == 0


# -- migration shape -----------------------------------------------------------------------------

def test_stream_id_stays_the_first_replicas():
    r = relay(stream_options={"include_usage": True})
    r.chunks.rewrite(chunk("a", ids=[1]))
    after = [parse(r.chunks.rewrite(line)) for line in (chunk("b", ids=[2], cid="chatcmpl-B"),
                                                    chunk("", ids=[3], cid="chatcmpl-B", finish="stop"),
                                                    usage_chunk(cid="chatcmpl-B"))]
    assert [e["id"] for e in after] == ["chatcmpl-A"] * 3


def test_usage_chunk_reaches_only_clients_that_asked_and_is_remembered():
    quiet, asking = relay(), relay(stream_options={"include_usage": True})
    assert quiet.chunks.rewrite(usage_chunk()) is None
    assert parse(asking.chunks.rewrite(usage_chunk()))["usage"]["completion_tokens"] == 2
    assert quiet.chunks.usage == asking.chunks.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_usage_on_every_chunk_is_kept_for_metering_and_stripped_unless_asked():
    line = json.loads(chunk("a", ids=[1])[len("data: "):])
    line["usage"] = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    quiet, asking = relay(), relay(stream_options={"continuous_usage_stats": True})
    assert "usage" not in parse(quiet.chunks.rewrite("data: " + json.dumps(line)))
    assert parse(asking.chunks.rewrite("data: " + json.dumps(line)))["usage"]["completion_tokens"] == 1
    assert quiet.chunks.usage["completion_tokens"] == 1


def test_native_body_carries_priority_salt_and_usage_options_external_does_not():
    body = {**BASE, "service_tier": "batch", "cache_salt": "mine"}
    up = upstream_for(RequestFacts.of(body, tier="batch", salt="salted"), metered=True)
    assert up.native["priority"] == 2 and up.native["cache_salt"] == "salted"
    assert up.native["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert "priority" not in up.external and "cache_salt" not in up.external and "service_tier" not in up.external
    assert up.external["stream_options"] == {"include_usage": True}
    assert not up.client_usage


def test_native_body_carries_the_resolved_tier_external_and_embeddings_do_not():
    body = {**BASE, "service_tier": "auto"}
    up = upstream_for(RequestFacts.of(body, tier="standard"), metered=False)
    assert up.native["service_tier"] == "standard" and up.native["priority"] == 1
    assert "service_tier" not in up.external and "priority" not in up.external
    embeddings = upstream_for(RequestFacts.of({"model": "e", "input": "x", "service_tier": "flex"}, "/v1/embeddings",
                                              tier="batch"), metered=False)
    assert "service_tier" not in embeddings.native and "service_tier" not in embeddings.external


@pytest.mark.parametrize("body, cap, sent", [
    ({}, 16, {"max_tokens": 16}),                                   # none given: the tenant's cap is sent
    ({"max_completion_tokens": None}, 16, {"max_tokens": 16, "max_completion_tokens": None}),
    ({"max_tokens": 8}, 8, {"max_tokens": 8}),                      # within the cap: as asked
    ({"max_completion_tokens": 8}, 8, {"max_completion_tokens": 8}),
    ({}, None, {}),                                                  # no cap, none given: the worker's rule
])
def test_the_tenants_cap_goes_to_every_replica_when_none_is_asked(body, cap, sent):
    up = upstream_for(RequestFacts.of({**BASE, **body}, max_new_tokens=cap), metered=False)
    for sent_body in (up.native, up.external):
        assert {k: v for k, v in sent_body.items() if k.startswith("max_")} == sent


def test_a_batch_of_prompts_streams_a_choice_per_prompt_and_is_not_migrated():
    batch = relay(prompt=["a", "b"], n=2)
    assert batch.plan.num_choices == 4           # more than one: not migrated mid-stream
    for index in range(3):
        batch.chunks.rewrite(chunk("x", finish="stop", index=index))
    assert not batch.chunks.saw_finish
    batch.chunks.rewrite(chunk("x", finish="stop", index=3))
    assert batch.chunks.saw_finish
    assert relay(prompt=[[1, 2]]).plan.num_choices == 1


def test_duplicate_role_chunk_dropped():
    r = relay()
    first = parse(r.chunks.rewrite(chunk(role=True)))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert r.chunks.rewrite(chunk(role=True, cid="chatcmpl-B")) is None


def test_duplicate_role_chunk_dropped_when_ids_asked():
    r = relay(return_token_ids=True)
    assert parse(r.chunks.rewrite(chunk(role=True, prompt_ids=[1])))["choices"][0]["delta"]["role"] == "assistant"
    assert r.chunks.rewrite(chunk(role=True, cid="chatcmpl-B", prompt_ids=[1])) is None


def test_role_chunk_of_every_choice_kept_with_n2():
    r = relay(n=2)
    r.chunks.rewrite(chunk(role=True, index=0))
    second = r.chunks.rewrite(chunk(role=True, index=1))
    assert second is not None and parse(second)["choices"][0]["delta"].get("role") == "assistant"


# -- stream end and odd lines --------------------------------------------------------------------

def test_saw_finish_waits_for_every_choice_with_n2():
    r = relay(n=2)
    r.chunks.rewrite(chunk("a", index=0, finish="stop"))
    assert not r.chunks.saw_finish                         # choice 1 is still running: a break now is an error
    r.chunks.rewrite(chunk("b", index=1, finish="length"))
    assert r.chunks.saw_finish


def test_finish_usage_and_done():
    r = relay(stream_options={"include_usage": True})
    assert not r.chunks.saw_finish
    end = parse(r.chunks.rewrite(chunk("", ids=[4], finish="stop")))
    assert end["choices"][0]["finish_reason"] == "stop"
    assert r.chunks.saw_finish and not r.chunks.finished
    usage = parse(r.chunks.rewrite(usage_chunk()))
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 5
    assert r.chunks.rewrite("data: [DONE]") == "data: [DONE]\n\n"
    assert r.chunks.finished


def test_logprobs_only_chunk_kept():
    r = relay()
    event = parse(r.chunks.rewrite(chunk("", ids=[4], logprobs={"content": [{"token": "", "logprob": -0.1}]})))
    assert event["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.1


@pytest.mark.parametrize("line", ["", "\n", "\r\n", ": keep-alive", "event: ping", "id: 3\n"])
def test_non_data_lines_give_nothing(line):
    assert relay().chunks.rewrite(line) is None


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_line_endings(ending):
    r = relay()
    assert parse(r.chunks.rewrite(chunk("Hi", ids=[5]) + ending))["choices"][0]["delta"]["content"] == "Hi"
    assert r.chunks.rewrite("data: [DONE]" + ending) == "data: [DONE]\n\n"
    assert r.chunks.delivered == [5] and r.chunks.finished


def test_non_chunk_data_passes_through():
    r = relay()
    assert r.chunks.rewrite("data: not json") == "data: not json\n\n"
    error = 'data: {"error": {"message": "boom"}}'
    assert parse(r.chunks.rewrite(error)) == {"error": {"message": "boom"}}


# -- the body sent to each replica ---------------------------------------------------------------

def native() -> Replica:
    return Replica("m-0", "m", "http://127.0.0.1:1", is_external=False)


def external() -> Replica:
    return Replica("m-ext-0", "m", "http://example.invalid", is_external=True)


def test_content_native_asks_ids_and_resumes():
    r = relay()
    sent = json.loads(r.content(native()))
    assert sent["return_token_ids"] is True
    assert "resume_token_ids" not in sent
    r.chunks.rewrite(chunk("Hi", ids=[5, 6]))
    sent = json.loads(r.content(native()))
    assert sent["resume_token_ids"] == [5, 6]
    assert {k: v for k, v in sent.items() if k not in ("return_token_ids", "resume_token_ids")} == {**BASE, "priority": 0, "service_tier": "interactive"}


def test_content_external_is_the_client_body():
    r = relay(temperature=0.5)
    r.chunks.rewrite(chunk("Hi", ids=[5]))
    assert json.loads(r.content(external())) == {**BASE, "temperature": 0.5}


def test_content_native_passes_client_resume_ids():
    r = relay(resume_token_ids=[7, 8])
    assert json.loads(r.content(native()))["resume_token_ids"] == [7, 8]


def test_only_a_single_choice_migrates():
    assert relay().plan.num_choices == relay(n=1).plan.num_choices == 1
    assert relay(n=2).plan.num_choices == 2
