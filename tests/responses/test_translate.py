"""The pure Responses <-> chat translation: request bodies, messages, output items, usage, errors."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response
from pydantic import ValidationError

from infercloud.openai.errors import APIError
from infercloud.openai.protocol import validation_error
from infercloud.openai.responses import ResponsesRequest
from infercloud.responses.translate import (chat_body, continuation, input_items, items_to_messages, map_error,
                                            map_error_body, response_from_chat)


def req(**fields) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "Hi", **fields})


def test_a_string_input_is_one_user_message_after_the_history_and_the_instructions():
    body = req(instructions="Be brief.", max_output_tokens=7, temperature=0.0, top_p=0.5, user="u1")
    history = [{"role": "user", "content": "Before"}, {"role": "assistant", "content": "Earlier answer"}]
    items = input_items(body)
    assert items == [{"type": "message", "id": items[0]["id"], "role": "user",
                      "content": [{"type": "input_text", "text": "Hi"}], "status": "completed"}]
    assert items[0]["id"].startswith("msg_")
    chat = chat_body(body, history, items)
    assert chat == {"model": "m", "messages": [*history, {"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Hi"}],
                    "max_tokens": 7, "temperature": 0.0, "top_p": 0.5, "user": "u1"}


def test_streams_ask_for_usage():
    chat = chat_body(req(stream=True), [], input_items(req()))
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_message_items_with_parts_and_function_calls_become_chat_messages():
    body = req(input=[
        {"role": "developer", "content": "dev"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                        {"type": "input_text", "text": "b"}]},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": '{"c":"P"}',
         "status": "completed"},
        {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": "noon"},
        {"type": "function_call", "call_id": "call_3", "name": "time", "arguments": "{}"},
    ])
    items = input_items(body)
    assert [i["type"] for i in items] == ["message"] * 3 + ["function_call"] * 2 + ["function_call_output"] * 2 + \
        ["function_call"]
    assert items[2]["id"] == "msg_1" and items[2]["content"] == [{"type": "output_text", "text": "Let me look.",
                                                                   "annotations": []}]
    assert items[3]["id"] == "fc_1" and items[4]["id"].startswith("fc_") and items[5]["id"].startswith("fco_")
    def call(i, name, args):
        return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}
    assert items_to_messages(items) == [
        {"role": "developer", "content": "dev"},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [call(1, "weather", '{"c":"P"}'),
                                                                         call(2, "time", "{}")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        {"role": "assistant", "content": None, "tool_calls": [call(3, "time", "{}")]},
    ]


# Tools and text formats: the chat worker takes them once its tool-calling support lands.
def test_tools_tool_choice_and_text_formats_map_onto_chat_fields():
    tool = {"type": "function", "name": "weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}
    body = req(tools=[tool], tool_choice={"type": "function", "name": "weather"}, parallel_tool_calls=False,
               text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}})
    chat = chat_body(body, [], input_items(body))
    assert chat["tools"] == [{"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}}
    assert chat_body(req(tool_choice="required"), [], [])["tool_choice"] == "required"
    assert chat_body(req(text={"format": {"type": "json_object"}}), [], [])["response_format"] == \
        {"type": "json_object"}
    assert "response_format" not in chat_body(req(text={"format": {"type": "text"}}), [], [])


@pytest.mark.parametrize("fields, param", [
    ({"reasoning": {"effort": "low"}}, "reasoning"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input"),
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"input": []}, "input"),
])
def test_what_infercloud_does_not_take_is_a_400_naming_the_field(fields, param):
    with pytest.raises(ValidationError) as caught:
        req(**fields)
    error = validation_error(caught.value)
    assert error.status == 400 and error.param == param


def test_a_chat_reply_becomes_a_response_the_official_client_parses():
    body = req(instructions="Be brief.", metadata={"k": "v"}, max_output_tokens=5)
    chat = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                         "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 5, "total_tokens": 45,
                      "prompt_tokens_details": {"cached_tokens": 32}, "device_seconds": 0.1}}
    data = response_from_chat("resp_ab", body, 1700000000, chat)
    assert "output_text" not in data
    response = Response.model_validate(data)
    assert response.output_text == "Hello there"
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].type == "message" and response.output[0].id.startswith("msg_")
    assert response.output[0].status == "incomplete"
    assert data["usage"] == {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 32, "cache_write_tokens": 0},
                             "output_tokens": 5,
                             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 45}
    assert (data["instructions"], data["metadata"], data["max_output_tokens"], data["store"], data["error"]) == \
        ("Be brief.", {"k": "v"}, 5, True, None)
    assert data["text"] == {"format": {"type": "text"}} and data["tool_choice"] == "auto" and data["tools"] == []


def test_tool_calls_become_function_call_items_and_continue_as_one_assistant_turn():
    body = req()
    chat = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    data = response_from_chat("resp_ab", body, 1, chat)
    response = Response.model_validate(data)
    assert response.status == "completed"
    [call] = response.output
    assert (call.type, call.call_id, call.name, call.arguments, call.status) == \
        ("function_call", "call_9", "f", '{"x":1}', "completed")
    assert call.id.startswith("fc_")
    items = input_items(body)
    assert continuation([{"role": "system", "content": "s"}], items, data["output"]) == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}]}]


def test_chat_errors_name_the_responses_field():
    assert map_error(APIError(400, "too long", param="max_tokens")).param == "max_output_tokens"
    assert map_error(APIError(400, "bad", param="messages")).param == "input"
    body = json.dumps({"error": {"message": "x", "type": "invalid_request_error", "param": "response_format",
                                 "code": None}}).encode()
    assert json.loads(map_error_body(body))["error"]["param"] == "text"
    assert map_error_body(b"not json") == b"not json"
