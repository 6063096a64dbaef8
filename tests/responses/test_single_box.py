"""The Responses API on the single-box server (`infercloud serve`, no cluster): a real process, the real
SmolLM2 and the official `openai` client. Stored responses go to a SQLite file of the test's own."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
BLOCK = 16   # the engine's block_size: prefix-cache hits come in whole blocks
MODELS = [{"name": SMOL, "engine": {"kv_cache_memory_gb": 0.25}}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_dir):
    folder = tmp_path_factory.mktemp("responses")
    proc = start_server(folder, {"models": MODELS, "responses": {"database": f"sqlite:///{folder}/responses.db"}})
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def sse_events(response: httpx.Response) -> list[dict]:
    """The `data:` payloads of an SSE body, checking each names its type in its `event:` line too."""
    events = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            event = json.loads(lines["data"])
            assert lines["event"] == event["type"]
            events.append(event)
    return events


def test_create_retrieve_list_and_delete(server, client):
    created = client.responses.create(model=SMOL, input="What is the capital of France?", max_output_tokens=24,
                                      temperature=0, instructions="Answer in one sentence.", metadata={"k": "v"})
    assert created.id.startswith("resp_") and created.object == "response"
    assert created.status in ("completed", "incomplete") and created.output_text
    assert created.output[0].type == "message" and created.output[0].id.startswith("msg_")
    assert created.instructions == "Answer in one sentence." and created.metadata == {"k": "v"}
    assert created.store is True and created.previous_response_id is None and created.error is None
    usage = created.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0

    assert client.responses.retrieve(created.id).model_dump() == created.model_dump()
    items = client.responses.input_items.list(created.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text == \
        "What is the capital of France?"
    assert items.first_id == items.last_id == items.data[0].id and not items.has_more

    assert client.responses.delete(created.id) is None
    for call in (lambda: client.responses.retrieve(created.id), lambda: client.responses.delete(created.id),
                 lambda: client.responses.input_items.list(created.id)):
        with pytest.raises(openai.NotFoundError):
            call()


def test_input_items_page_in_either_order(server, client):
    texts = ["one", "two", "three"]
    created = client.responses.create(model=SMOL, max_output_tokens=2,
                                      input=[{"role": "user", "content": t} for t in texts])
    desc = client.responses.input_items.list(created.id, limit=2)
    assert [i.content[0].text for i in desc.data] == ["three", "two"] and desc.has_more
    rest = client.responses.input_items.list(created.id, limit=2, after=desc.last_id)
    assert [i.content[0].text for i in rest.data] == ["one"] and not rest.has_more
    asc = client.responses.input_items.list(created.id, order="asc")
    assert [i.content[0].text for i in asc.data] == texts
    bad = httpx.get(f"{server.url}/v1/responses/{created.id}/input_items", params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_a_three_turn_conversation_reuses_the_cached_prefix(client):
    turns = ["What is the capital of France?", "And of Germany?", "And of Italy?"]
    previous = None
    for i, text in enumerate(turns):
        reply = client.responses.create(model=SMOL, input=text, previous_response_id=previous and previous.id,
                                        max_output_tokens=16, temperature=0)
        assert reply.previous_response_id == (previous.id if previous else None)
        if previous is not None:
            # the previous turn's prompt is this one's prefix: its whole blocks are cached (the last one maybe not)
            cached = reply.usage.input_tokens_details.cached_tokens
            assert cached > 0
            assert cached >= previous.usage.input_tokens // BLOCK * BLOCK - BLOCK
            assert reply.usage.input_tokens > previous.usage.input_tokens + previous.usage.output_tokens
        previous = reply
    items = client.responses.input_items.list(previous.id)
    assert [i.content[0].text for i in items.data] == ["And of Italy?"]   # this turn's input only


def test_store_false_keeps_nothing(client):
    reply = client.responses.create(model=SMOL, input="Hi", max_output_tokens=4, store=False)
    assert reply.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=SMOL, input="Hi", max_output_tokens=4, previous_response_id=reply.id)
    assert caught.value.body["param"] == "previous_response_id" and caught.value.body["code"] == "not_found"


def test_a_stream_parses_with_the_official_client_and_is_stored_as_sent(server, client):
    events = list(client.responses.create(model=SMOL, input="Tell me a short joke.", max_output_tokens=32,
                                          temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response
    assert "".join(d.delta for d in deltas) == final.output_text
    assert {(d.item_id, d.output_index, d.content_index) for d in deltas} == {(final.output[0].id, 0, 0)}
    assert client.responses.retrieve(final.id).model_dump() == final.model_dump()

    with client.responses.stream(model=SMOL, input="Say hello.", max_output_tokens=200) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        done = stream.get_final_response()   # needs response.completed: it stopped by itself within 200
    assert done.status == "completed" and done.output_text == "".join(texts)

    raw = httpx.post(f"{server.url}/v1/responses", timeout=120,
                     json={"model": SMOL, "input": "Name a color.", "max_output_tokens": 8, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    sent = sse_events(raw)
    stored = httpx.get(f"{server.url}/v1/responses/{sent[-1]['response']['id']}").json()
    assert sent[-1]["response"] == stored


def test_a_client_that_leaves_a_stream_ends_its_request(server):
    body = {"model": SMOL, "input": "Count from one to a thousand in words.", "max_output_tokens": 2000,
            "stream": True, "store": True}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=60) as answer:
        lines = answer.iter_lines()
        seen = [line for line, _ in zip(lines, range(30))]
    assert any("response.output_text.delta" in line for line in seen)
    deadline = time.monotonic() + 30
    while True:   # the engine request is aborted and its slot given back, nothing is stored
        state = server.state()["models"][SMOL]
        if state["in_flight"] == 0 and state["running"] == 0 and state["kv_blocks_used"] == 0:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    created = json.loads(next(line for line in seen if line.startswith("data: "))[6:])
    assert httpx.get(f"{server.url}/v1/responses/{created['response']['id']}").status_code == 404


def test_a_continued_stream_uses_the_conversation(client):
    first = client.responses.create(model=SMOL, input="My name is Ada. Remember it.", max_output_tokens=16,
                                    temperature=0)
    events = list(client.responses.create(model=SMOL, input="What is my name?", previous_response_id=first.id,
                                          max_output_tokens=16, temperature=0, stream=True))
    final = events[-1].response
    assert final.previous_response_id == first.id
    assert final.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens // BLOCK * BLOCK - BLOCK > 0


def test_bad_bodies_are_400s_naming_the_field(server):
    url = f"{server.url}/v1/responses"
    for body, param in [({"model": SMOL, "input": "x", "reasoning": {}}, "reasoning"),
                        ({"model": SMOL}, "input"),
                        ({"model": SMOL, "input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input"),
                        ({"model": SMOL, "input": "x", "max_output_tokens": 10**6}, "max_output_tokens")]:
        answer = httpx.post(url, json=body, timeout=60)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    assert httpx.post(url, json={"model": "nope", "input": "x"}).status_code == 404
    assert httpx.get(f"{server.url}/v1/responses/resp_00", params={"stream": "true"}).status_code == 400
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert schema["paths"]["/v1/responses"]["post"]["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/ResponsesRequest"}


# -- tools: need the chat worker's tool calling (tools, tool_choice, tool messages) --------------------------
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_a_function_call_round_trip(client):
    call = client.responses.create(model=SMOL, input="What is the weather in Paris?", tools=[WEATHER],
                                   tool_choice={"type": "function", "name": "get_weather"},
                                   parallel_tool_calls=False, max_output_tokens=64, temperature=0)
    calls = [o for o in call.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].id.startswith("fc_")
    assert "city" in json.loads(calls[0].arguments)
    assert call.tools[0].name == "get_weather" and call.tool_choice.name == "get_weather"
    answer = client.responses.create(model=SMOL, previous_response_id=call.id, tools=[WEATHER], max_output_tokens=32,
                                     temperature=0, input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                                            "output": '{"temperature_c": 21, "sky": "clear"}'}])
    assert answer.output_text and answer.usage.input_tokens_details.cached_tokens > 0
    items = client.responses.input_items.list(answer.id)
    assert items.data[0].type == "function_call_output" and items.data[0].call_id == calls[0].call_id


def test_a_streamed_function_call(server, client):
    events = list(client.responses.create(model=SMOL, input="Weather in Rome?", tools=[WEATHER],
                                          tool_choice="required", parallel_tool_calls=False, max_output_tokens=64,
                                          temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    final = events[-1].response
    [call] = [o for o in final.output if o.type == "function_call"]
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta" and e.item_id == call.id]
    assert call.name == "get_weather" and "".join(deltas) == call.arguments
    stored = httpx.get(f"{server.url}/v1/responses/{final.id}").json()
    assert stored == final.model_dump(mode="json", exclude_unset=True)


def test_a_json_schema_format(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    reply = client.responses.create(model=SMOL, input="Name the capital of France as JSON.", max_output_tokens=48,
                                    temperature=0, text={"format": {"type": "json_schema", "name": "capital",
                                                                    "schema": schema, "strict": True}})
    assert reply.text.format.type == "json_schema"
    if reply.status == "completed":
        assert isinstance(json.loads(reply.output_text)["city"], str)


# -- expiry -------------------------------------------------------------------------------------------------
def test_expired_responses_are_404s(tmp_path, smollm2_dir):
    proc = start_server(tmp_path, {"models": MODELS, "responses": {"database": f"sqlite:///{tmp_path}/r.db",
                                                                   "ttl_s": 2}})
    try:
        client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key="unused", max_retries=0)
        reply = client.responses.create(model=SMOL, input="Hi", max_output_tokens=4)
        assert client.responses.retrieve(reply.id).id == reply.id
        time.sleep(2.5)
        for call in (lambda: client.responses.retrieve(reply.id), lambda: client.responses.delete(reply.id),
                     lambda: client.responses.input_items.list(reply.id),
                     lambda: client.responses.create(model=SMOL, input="Hi", max_output_tokens=4,
                                                     previous_response_id=reply.id)):
            with pytest.raises(openai.NotFoundError):
                call()
    finally:
        assert proc.stop() == 0, proc.log()
