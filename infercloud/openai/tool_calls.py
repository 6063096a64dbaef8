"""Tool calls on the wire: how tools and past calls reach the prompt, and how replies are parsed into calls.

The call format is Hermes/Qwen's, the most common among open models:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Prompt: a chat template that knows tools (its source mentions `tools`) gets them as HF's `tools` argument
and the history as is (assistant `tool_calls` with arguments as objects, `tool` messages). A template
that does not (SmolLM2's) gets the documented default: a system block listing the tools as JSON and the
call format, each past call written into its assistant message in that format, each tool result as a user
message `<tool_response>...</tool_response>`. With `tool_choice: "none"` tools are left out of the prompt.

The grammar calls are decoded under is worker/constraints.py's (from the markers defined here).

Parsing (ToolCallParser) runs on the streamed text, so a stream's deltas and a plain reply's `tool_calls`
come from the same code: text before a call is content (whitespace between calls is dropped), each call
opens with a delta carrying id, type and name, then its arguments in pieces.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from infercloud.engine.tokenizer import Tokenizer
from infercloud.openai.protocol import ChatMessage, ChatTool, NamedToolChoice

CALL_OPEN = "<tool_call>"
NAME_PREFIX = '\n{"name": "'
ARGS_PREFIX = '", "arguments": '
CALL_CLOSE = "}\n</tool_call>"

SYSTEM_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def effective_tool_choice(tools: list[ChatTool] | None, choice: str | NamedToolChoice | None):
    """OpenAI's default: `auto` when tools are given, else `none`."""
    if choice is not None:
        return choice
    return "auto" if tools else "none"


def offered_tools(tools: list[ChatTool] | None, choice: str | NamedToolChoice | None) -> list[ChatTool] | None:
    """The tools a reply may call: none when tool_choice is (or defaults to) "none"."""
    return tools if tools and effective_tool_choice(tools, choice) != "none" else None


def chat_prompt_ids(tokenizer: Tokenizer, messages: list[ChatMessage], tools: list[ChatTool] | None,
                    choice: str | NamedToolChoice | None) -> list[int]:
    """A chat request's prompt token ids: what the worker prefills, and what the gateway counts and hashes
    (ChatTemplateError when the template refuses)."""
    return tokenizer.encode(render_chat(tokenizer, messages, offered_tools(tools, choice)), add_special_tokens=False)


def render_chat(tokenizer: Tokenizer, messages: list[ChatMessage], tools: list[ChatTool] | None,
                add_generation_prompt: bool = True) -> str:
    """The prompt text of a chat request, as every part that counts or hashes it must see it (ChatTemplateError
    when the template refuses). `tools`: those the reply may call (none when tool_choice is "none")."""
    native = tokenizer.template_knows_tools
    rendered = template_messages(messages, tools, native)
    return tokenizer.render_chat(rendered, add_generation_prompt,
                                 [t.model_dump(exclude_none=True) for t in tools] if tools and native else None)


def template_messages(messages: list[ChatMessage], tools: list[ChatTool] | None, native: bool) -> list[dict]:
    """The history as the chat template renders it (see the module docstring for the two ways)."""
    if native:
        return [_native_message(m) for m in messages]
    rendered = []
    for m in messages:
        if m.role == "tool":
            rendered.append({"role": "user", "content": f"<tool_response>\n{m.text()}\n</tool_response>"})
            continue
        text = m.text()
        for call in m.tool_calls or []:
            text += ("\n" if text else "") + _call_text(call.function.name, call.function.arguments)
        rendered.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    if tools:
        block = SYSTEM_PROMPT.format(tools="\n".join(json.dumps(t.model_dump(exclude_none=True)) for t in tools))
        if rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": rendered[0]["content"] + "\n\n" + block}
        else:
            rendered.insert(0, {"role": "system", "content": block})
    return rendered


def _native_message(m: ChatMessage) -> dict:
    out = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                             for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def _arguments(text: str):
    try:
        return json.loads(text)   # templates write arguments with `tojson`
    except ValueError:
        return text


def _call_text(name: str, arguments: str) -> str:
    args = arguments.strip() or "{}"
    return f'{CALL_OPEN}{NAME_PREFIX}{name}{ARGS_PREFIX}{args}{CALL_CLOSE}'


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCallParser:
    """Turns a reply's text, fed in pieces, into OpenAI chat deltas: {"content": ...} or {"tool_calls": [...]}."""

    state: str = "text"       # text | name | arguments
    buffer: str = ""
    held_space: str = ""      # whitespace held back: sent with the next text, dropped before a call
    num_calls: int = 0
    calls: list[dict] = field(default_factory=list)   # the whole calls so far, OpenAI's message shape

    def feed(self, text: str) -> list[dict]:
        self.buffer += text
        deltas: list[dict] = []
        while True:
            step = {"text": self._text, "name": self._name, "arguments": self._arguments}[self.state]()
            if step is None:
                return deltas
            if step:
                deltas.append(step)

    def finish(self) -> list[dict]:
        """Flush what is held: a reply cut short mid-call keeps its partial arguments, but what was held
        back as the start of a marker (`<tool`, `}\n</tool`) is the marker's, not text or arguments."""
        rest, self.buffer = self.buffer, ""
        marker = CALL_CLOSE if self.state == "arguments" else CALL_OPEN
        if marker.startswith(rest):
            return []
        if self.state == "arguments":
            return [self._args_delta(rest)]
        if self.state == "text" and rest.strip():
            return [{"content": self._take_space() + rest}]
        return []

    def _text(self) -> dict | None:
        at = self.buffer.find(CALL_OPEN)
        if at >= 0:
            before, self.buffer = self.buffer[:at], self.buffer[at + len(CALL_OPEN):]
            self.state = "name"
            self.held_space = ""
            return {"content": self._take_space() + before.rstrip()} if before.strip() else {}
        keep = _partial_suffix(self.buffer, CALL_OPEN)
        ready, self.buffer = self.buffer[:len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
        if not ready:
            return None
        if not ready.strip():
            self.held_space += ready
            return None
        content = self._take_space() + ready.rstrip()
        self.held_space = ready[len(ready.rstrip()):]
        return {"content": content}

    def _name(self) -> dict | None:
        at = self.buffer.find(ARGS_PREFIX)
        if at < 0:
            return None
        name = self.buffer[:at].removeprefix(NAME_PREFIX)
        self.buffer = self.buffer[at + len(ARGS_PREFIX):]
        self.state = "arguments"
        call = {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": ""}}
        self.calls.append(call)
        self.num_calls += 1
        return {"tool_calls": [{"index": self.num_calls - 1, **json.loads(json.dumps(call))}]}

    def _arguments(self) -> dict | None:
        at = self.buffer.find(CALL_CLOSE)
        if at >= 0:
            args, self.buffer = self.buffer[:at], self.buffer[at + len(CALL_CLOSE):]
            self.state = "text"
            return self._args_delta(args) if args else {}
        keep = _partial_suffix(self.buffer, CALL_CLOSE)
        args, self.buffer = self.buffer[:len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
        return self._args_delta(args) if args else None

    def _args_delta(self, args: str) -> dict:
        self.calls[-1]["function"]["arguments"] += args
        return {"tool_calls": [{"index": self.num_calls - 1, "function": {"arguments": args}}]}

    def _take_space(self) -> str:
        space, self.held_space = self.held_space, ""
        return space


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker` (held back: it may complete)."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def parse_reply(text: str) -> tuple[str | None, list[dict]]:
    """A whole reply -> (content or None, tool_calls in OpenAI's message shape)."""
    parser = ToolCallParser()
    deltas = parser.feed(text) + parser.finish()
    content = "".join(d["content"] for d in deltas if "content" in d)
    return (content or None), parser.calls
