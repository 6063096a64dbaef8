"""Chat SSE chunks -> Responses events: the order and shapes the official client's stream state accepts."""

from __future__ import annotations

from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from openai._models import construct_type_unchecked
from openai._types import omit
from pydantic import TypeAdapter

from infercloud.openai.responses import ResponsesRequest
from infercloud.responses.stream import StreamTranslator, sse

EVENTS = TypeAdapter(ResponseStreamEvent)


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    out = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


def run(chunks: list[dict], **fields) -> tuple[list[dict], dict]:
    translator = StreamTranslator("resp_1", ResponsesRequest(model="m", input="Hi", stream=True, **fields), 1)
    events = translator.start()
    for c in chunks:
        events += translator.feed(c)
    closing, response = translator.finish()
    return [*events, *closing, translator.final_event(response)], response


def parse_with_client(events: list[dict]):
    """Every event validates as the SDK's type, and its stream state accumulates them into the final response."""
    state = ResponseStreamState(input_tools=[], text_format=omit)
    for event in events:
        EVENTS.validate_python(event)
        state.handle_event(construct_type_unchecked(type_=ResponseStreamEvent, value=event))
    return state._completed_response


USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 0}}


def test_text_deltas_make_one_message_item():
    events, response = run([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
                            chunk({"content": "lo"}), chunk({}, "stop"), chunk(usage=USAGE)])
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [d["delta"] for d in deltas] == ["Hel", "lo"]
    assert {(d["item_id"], d["output_index"], d["content_index"]) for d in deltas} == \
        {(response["output"][0]["id"], 0, 0)}
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert response["output"][0]["content"][0]["text"] == "Hello" and response["status"] == "completed"
    assert response["usage"]["input_tokens"] == 10 and response["usage"]["output_tokens"] == 2
    final = parse_with_client(events)
    assert final.output_text == "Hello" and final.id == "resp_1"
    assert "event: response.completed\ndata: {" in sse(events[-1])


def test_a_length_stop_ends_incomplete():
    events, response = run([chunk({"content": "Hi"}), chunk({}, "length")], max_output_tokens=1)
    assert events[-1]["type"] == "response.incomplete"
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


def test_no_text_at_all_still_makes_an_empty_message():
    events, response = run([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")])
    assert response["output"][0]["content"][0]["text"] == ""
    assert parse_with_client(events).output_text == ""


# Tool calls: streamed as OpenAI's chat tool-call deltas once the worker supports tools.
def test_tool_call_deltas_make_function_call_items_after_the_text():
    calls = [chunk({"content": "Checking."}),
             chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                    "function": {"name": "weather", "arguments": ""}}]}),
             chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
             chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
             chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                    "function": {"name": "time", "arguments": "{}"}}]}),
             chunk({}, "tool_calls")]
    events, response = run(calls)
    kinds = [e["type"] for e in events]
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.delta")
    assert [o["type"] for o in response["output"]] == ["message", "function_call", "function_call"]
    weather, time = response["output"][1:]
    assert (weather["call_id"], weather["name"], weather["arguments"], weather["status"]) == \
        ("call_a", "weather", '{"city":"Paris"}', "completed")
    assert (time["call_id"], time["arguments"]) == ("call_b", "{}")
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(d["output_index"], d["arguments"]) for d in done] == [(1, '{"city":"Paris"}'), (2, "{}")]
    final = parse_with_client(events)
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]


def test_an_error_event_fails_the_response():
    translator = StreamTranslator("resp_1", ResponsesRequest(model="m", input="Hi", stream=True), 1)
    translator.start()
    translator.feed(chunk({"content": "par"}))
    try:
        translator.feed({"error": {"message": "replica died"}})
    except Exception as exc:  # noqa: BLE001 - StreamFailed
        [failed] = translator.fail(str(exc))
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed" and failed["response"]["error"]["message"] == "replica died"
    EVENTS.validate_python(failed)


def _collect(pieces: list[str], saved: list[dict]) -> list[dict]:
    """Run the service's SSE translation over chat SSE text cut into `pieces` anywhere."""
    import asyncio
    import json

    from infercloud.responses.service import _events

    async def source():
        for piece in pieces:
            yield piece

    async def save(response: dict) -> None:
        saved.append(response)

    async def run() -> list[str]:
        translator = StreamTranslator("resp_1", ResponsesRequest(model="m", input="Hi", stream=True), 1)
        return [e async for e in _events(source(), translator, save)]

    out = asyncio.run(run())
    assert all(e.startswith("event: ") and e.endswith("\n\n") for e in out)
    return [json.loads(e.split("data: ", 1)[1]) for e in out]


def test_chat_sse_cut_anywhere_translates_the_same():
    import json

    text = "".join(f"data: {json.dumps(c)}\n\n" for c in [
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
        chunk({}, "stop"), chunk(usage=USAGE)]) + "data: [DONE]\n\n"
    whole, saved = _collect([text], []), []
    for size in (1, 7, 50):
        cut = _collect([text[i:i + size] for i in range(0, len(text), size)], saved)
        assert [e["type"] for e in cut] == [e["type"] for e in whole]
    assert whole[-1]["type"] == "response.completed"
    assert saved[-1] == cut[-1]["response"]   # stored before the final event, as sent


def test_a_chat_stream_that_breaks_fails_and_stores_nothing():
    import json

    saved: list[dict] = []
    broken = _collect([f"data: {json.dumps(chunk({'content': 'Hel'}))}\n\n"], saved)
    assert broken[-1]["type"] == "response.failed" and not saved
    assert broken[-1]["response"]["output"][0]["content"][0]["text"] == "Hel"
    error = _collect([f"data: {json.dumps(chunk({'content': 'a'}))}\n\n",
                      'data: {"error": {"message": "The replica serving this stream failed"}}\n\n',
                      "data: [DONE]\n\n"], saved)
    assert error[-1]["type"] == "response.failed" and not saved
    assert "replica" in error[-1]["response"]["error"]["message"]
