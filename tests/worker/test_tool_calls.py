"""Tool calls on the wire: prompt rendering (a template that knows tools, and the default for one that does
not), the streaming parser, and the grammar a call is decoded under (real tokenizer and xgrammar)."""

from __future__ import annotations

import json
import shutil

import pytest

from infercloud.engine.structured.grammars import Grammars
from infercloud.engine.tokenizer import Tokenizer
from infercloud.models.local import LocalModel
from infercloud.openai.protocol import ChatMessage, ChatTool, NamedToolChoice
from infercloud.openai.tool_calls import ToolCallParser, parse_reply, render_chat
from infercloud.worker.constraints import tool_spec

WEATHER = ChatTool.model_validate({"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"]}}})
TIME = ChatTool.model_validate({"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}})
HISTORY = [ChatMessage.model_validate(m) for m in [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
]]
# a Qwen2.5-style template that renders tools itself
NATIVE_TEMPLATE = """{%- if tools %}<|im_start|>system
TOOLS:{% for t in tools %} {{ t.function.name }}{% endfor %}<|im_end|>
{% endif %}{%- for m in messages %}<|im_start|>{{ m.role }}
{%- if m.tool_calls %}{% for c in m.tool_calls %} CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}
{%- else %} {{ m.content }}{% endif %}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def test_default_rendering_lists_tools_and_replays_calls_and_results(smollm2_dir):
    tok = Tokenizer(LocalModel.open(smollm2_dir))
    assert not tok.template_knows_tools
    text = render_chat(tok, HISTORY, [WEATHER, TIME])
    assert text.count("<|im_start|>system") == 1 and "<tools>" in text
    assert json.dumps(WEATHER.model_dump(exclude_none=True)) in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response>" in text
    assert "<tools>" not in render_chat(tok, HISTORY, None)   # tool_choice "none": tools left out


def test_a_template_that_knows_tools_renders_them_itself(smollm2_dir, tmp_path):
    folder = tmp_path / "native"
    shutil.copytree(smollm2_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "chat_template.jinja").write_text(NATIVE_TEMPLATE)
    tok = Tokenizer(LocalModel.open(folder))
    assert tok.template_knows_tools
    text = render_chat(tok, HISTORY, [WEATHER, TIME])
    assert "TOOLS: get_weather get_time" in text and "<tools>" not in text
    assert 'CALL get_weather {"city": "Paris"}' in text        # arguments handed over as an object
    assert "<|im_start|>tool sunny, 21 C" in text


def test_parser_streams_the_same_calls_as_the_whole_reply():
    reply = ('Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "x": {"y": 1}}}\n'
             '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>')
    content, calls = parse_reply(reply)
    assert content == "Checking."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris", "x": {"y": 1}}), ("get_time", {"zone": "UTC"})]
    for size in (1, 3, 7):
        parser, deltas = ToolCallParser(), []
        for i in range(0, len(reply), size):
            deltas += parser.feed(reply[i:i + size])
        deltas += parser.finish()
        heads = [d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" in d["tool_calls"][0]]
        assert [h["function"] for h in heads] == [{"name": "get_weather", "arguments": ""},
                                                  {"name": "get_time", "arguments": ""}]
        args = {}
        for d in deltas:
            for call in d.get("tool_calls", []):
                args[call["index"]] = args.get(call["index"], "") + call["function"].get("arguments", "")
        assert [args[0], args[1]] == [c["function"]["arguments"] for c in calls]
        assert "".join(d.get("content", "") for d in deltas) == "Checking."


def test_plain_text_passes_through_and_a_cut_call_keeps_its_arguments():
    assert parse_reply("Hello <tool without a call") == ("Hello <tool without a call", [])
    content, calls = parse_reply('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par')
    assert content is None and calls[0]["function"]["arguments"] == '{"city": "Par'
    # cut inside a marker: the held-back start of `}\n</tool_call>` or `<tool_call>` is the marker's
    assert parse_reply('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool')[1][0]["function"]["arguments"] \
        == '{"a": 1}'
    assert parse_reply('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n<tool_')[0] is None
    assert parse_reply("<tool") == (None, [])


@pytest.mark.parametrize("choice, allowed", [
    ("required", {"get_weather", "get_time"}),
    (NamedToolChoice.model_validate({"type": "function", "function": {"name": "get_time"}}), {"get_time"}),
])
def test_call_grammar_accepts_only_valid_calls(smollm2_dir, choice, allowed):
    tok = Tokenizer(LocalModel.open(smollm2_dir))
    grammars = Grammars(tok, 49152, 4)
    spec = tool_spec([WEATHER, TIME], choice, parallel=False)
    good = {"get_weather": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            "get_time": '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'}
    for name, text in good.items():
        matcher = grammars.matcher(spec)
        assert matcher.accept_string(text) == (name in allowed)
    for bad in ('I will not call anything.', '<tool_call>\n{"name": "get_time", "arguments": {"zone": "PST"}}',
                '<tool_call>\n{"name": "nope", "arguments": {}}'):
        assert not grammars.matcher(spec).accept_string(bad)
    assert tool_spec([WEATHER], "none", parallel=True) is None
