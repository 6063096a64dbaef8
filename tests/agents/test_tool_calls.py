"""Tool calling on a real single-box server, through the official `openai` client.

NUM_TOOL_SETS generated tool sets (tests/agents/schemas.py: 1-4 functions each, with generated parameter
schemas) are offered with `tool_choice: "required"` and with each set's named function: every reply must
end with finish_reason "tool_calls", name an offered function (the named one when named) and carry
arguments that parse and validate against that function's schema. The same greedy requests streamed must
reassemble (by index: id and name from a call's first delta, arguments concatenated) to the same calls.
Then `parallel_tool_calls`, `auto`, a multi-turn history with tool results, and the 400s.

`required` with parallel calls allowed lets the model add calls until it stops by itself; SmolLM2 (135M)
often never does, so that variant is checked call by call (every call it finished must be valid) and the
strict finish_reason check runs with `parallel_tool_calls: false` (exactly one call).
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.agents.conftest import SMOL, loads, run_concurrently, validate
from tests.agents.schemas import tool_schemas, tool_set_for

NUM_TOOL_SETS = 50
MAX_TOKENS = 256
PARALLEL_MAX_TOKENS = 128
PARALLEL_EVERY = 4
PROMPT = "Please help me with my task using the tools."

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city"], "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current local time in a city.",
    "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string",
                                                                                    "maxLength": 20}}}}}


@pytest.fixture(scope="module")
def client(agent_server):
    return openai.OpenAI(base_url=f"{agent_server.url}/v1", api_key="unused", max_retries=0, timeout=600)


def named(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def chat(client, tools, tool_choice, prompt: str = PROMPT, messages: list[dict] | None = None, **kwargs):
    return client.chat.completions.create(model=SMOL, messages=messages or [{"role": "user", "content": prompt}],
                                          tools=tools, tool_choice=tool_choice,
                                          **{"max_tokens": MAX_TOKENS, "temperature": 0, **kwargs})


def calls_of(message) -> list[tuple[str, str]]:
    return [(c.function.name, c.function.arguments) for c in message.tool_calls or []]


def check_calls(calls: list[tuple[str, str]], tools: list[dict], only: str | None = None) -> None:
    schemas = tool_schemas(tools)
    for name, arguments in calls:
        assert name in schemas, f"{name!r} is not among {list(schemas)}"
        assert only is None or name == only, (name, only)
        validate(loads(arguments), schemas[name])


async def stream_calls(aclient, **kwargs) -> tuple[list[tuple[str, str]], list[str], str]:
    """A streamed reply's calls reassembled by index, its finish reasons and any content it streamed."""
    stream = await aclient.chat.completions.create(model=SMOL, stream=True, **kwargs)
    calls: dict[int, dict] = {}
    finishes, content = [], ""
    async for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            if c.finish_reason:
                finishes.append(c.finish_reason)
            for d in c.delta.tool_calls or []:
                if d.index not in calls:           # a call's first delta: id, type and name, no arguments yet
                    assert d.index == len(calls), (d.index, list(calls))
                    assert d.id and d.type == "function" and d.function.name, d
                    assert not d.function.arguments, d
                    calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
                else:                              # then arguments in pieces, nothing else
                    assert d.id is None and (d.function.name is None), d
                    calls[d.index]["arguments"] += d.function.arguments or ""
    ids = [c["id"] for c in calls.values()]
    assert len(set(ids)) == len(ids), ids
    return [(c["name"], c["arguments"]) for c in calls.values()], finishes, content


def request(tools, tool_choice, prompt: str = PROMPT, **kwargs) -> dict:
    """create()'s arguments for one user message (greedy unless told)."""
    return {"messages": [{"role": "user", "content": prompt}], "tools": tools, "tool_choice": tool_choice,
            "max_tokens": MAX_TOKENS, "temperature": 0, **kwargs}


async def reply_of(aclient, **kwargs) -> tuple[list[tuple[str, str]], list[str], str | None, int]:
    """A plain reply's (calls, [finish reason], content, completion tokens)."""
    r = await aclient.chat.completions.create(model=SMOL, **kwargs)
    (c,) = r.choices
    return calls_of(c.message), [c.finish_reason], c.message.content, r.usage.completion_tokens


# -- generated tool sets ------------------------------------------------------------------------------------

def named_choice(seed: int, tools: list[dict]) -> str:
    return tools[seed % len(tools)]["function"]["name"]


@pytest.fixture(scope="module")
def generated(agent_server) -> dict[int, dict[str, tuple]]:
    """Per tool set, greedy: `required` (parallel_tool_calls false) and the named function, each plain and
    streamed, and `required` with parallel calls allowed for every PARALLEL_EVERY-th set: (calls, finish
    reasons, content[, completion tokens]). 32 requests at a time, in groups of 10 sets whose first requests
    go first, so that most of the others find the prompt (the tools block, 170-880 tokens) in the prefix cache."""
    async def one(aclient, job: tuple[int, str]) -> tuple:
        seed, mode = job
        tools = tool_set_for(seed)
        if mode == "parallel":
            return await reply_of(aclient, **request(tools, "required", max_tokens=PARALLEL_MAX_TOKENS))
        body = request(tools, "required", parallel_tool_calls=False) if mode.startswith("required") \
            else request(tools, named(named_choice(seed, tools)))
        if mode.endswith("-stream"):
            return await stream_calls(aclient, **body)
        return (await reply_of(aclient, **body))[:3]

    modes = ("required", "named", "required-stream", "named-stream", "parallel")
    jobs = [(seed, mode) for group in range(0, NUM_TOOL_SETS, 10) for mode in modes
            for seed in range(group, min(group + 10, NUM_TOOL_SETS))
            if mode != "parallel" or seed % PARALLEL_EVERY == 0]
    out: dict[int, dict[str, tuple]] = {seed: {} for seed in range(NUM_TOOL_SETS)}
    for (seed, mode), result in zip(jobs, run_concurrently(agent_server, one, jobs)):
        out[seed][mode] = result
    return out


@pytest.mark.parametrize("mode", ["required", "named"])
def test_generated_tool_sets_give_one_valid_call(generated, mode):
    for seed, replies in generated.items():
        tools = tool_set_for(seed)
        calls, finishes, content = replies[mode]
        where = f"tool set {seed}: {calls} {finishes} {content!r}"
        assert finishes == ["tool_calls"], where
        assert content is None, where                       # nothing but calls under required / named
        assert len(calls) == 1, where
        check_calls(calls, tools, named_choice(seed, tools) if mode == "named" else None)


@pytest.mark.parametrize("mode", ["required", "named"])
def test_generated_tool_sets_streamed_reassemble_to_the_same_calls(generated, mode):
    for seed, replies in generated.items():
        calls, finishes, content = replies[mode + "-stream"]
        where = f"tool set {seed}: {calls} {finishes} {content!r}"
        assert finishes == ["tool_calls"] and content == "", where
        assert calls == replies[mode][0], (where, replies[mode][0])  # greedy: the same names and arguments


def test_required_with_parallel_calls_allowed(generated):
    """Without parallel_tool_calls false the model may call again and again: every call it finished must be
    valid; a reply cut by max_tokens may end inside its last call, and only that one (what such a cut reply
    must look like is test_a_reply_cut_by_max_tokens_is_a_prefix_of_the_whole_reply's)."""
    ended = 0
    for seed in range(0, NUM_TOOL_SETS, PARALLEL_EVERY):
        tools = tool_set_for(seed)
        calls, (finish,), content, tokens = generated[seed]["parallel"]
        assert calls, (seed, content)
        assert finish in ("tool_calls", "length"), (seed, finish)
        if finish == "tool_calls":
            ended += 1
            assert content is None, (seed, content)
            check_calls(calls, tools)
        else:
            assert tokens == PARALLEL_MAX_TOKENS, (seed, tokens)
            check_calls(calls[:-1], tools)
    assert ended >= 1    # some stop by themselves


def test_a_reply_cut_by_max_tokens_is_a_prefix_of_the_whole_reply(agent_server):
    """Two calls, then the same greedy request cut after every possible number of tokens: each cut reply's calls
    are the whole reply's, the last one's arguments cut short (a prefix), and there is no content."""
    messages = shots(["Paris", "Berlin"], both=True) + [
        {"role": "user", "content": "What are the weather and the time in Rome?"}]

    async def ask(aclient, job: tuple[int, bool]):
        max_tokens, streamed = job
        body = {"messages": messages, "tools": [WEATHER, TIME], "tool_choice": "required",
                "max_tokens": max_tokens, "temperature": 0}
        return await (stream_calls(aclient, **body) if streamed else reply_of(aclient, **body))

    ((whole, finishes, content, total),) = run_concurrently(agent_server, ask, [(MAX_TOKENS, False)])
    assert finishes == ["tool_calls"] and len(whole) >= 2 and content is None, (whole, finishes)
    jobs = [(n, streamed) for n in range(1, total) for streamed in (False, True)]
    results = run_concurrently(agent_server, ask, jobs)
    wrong = []
    for n, (calls, fin, text, _), (s_calls, s_fin, s_text) in zip(range(1, total), results[0::2], results[1::2]):
        ok = fin == s_fin == ["length"] and text is None and s_text == "" and s_calls == calls
        ok = ok and [name for name, _ in calls] == [name for name, _ in whole[:len(calls)]]
        ok = ok and all(args == whole[i][1] for i, (_, args) in enumerate(calls[:-1]))
        ok = ok and (not calls or whole[len(calls) - 1][1].startswith(calls[-1][1]))
        if not ok:
            wrong.append((n, calls, text, s_calls, s_text))
    assert not wrong, f"{len(wrong)} of {total - 1} cuts: {wrong}"


def shots(cities: list[str], both: bool) -> list[dict]:
    """A few earlier turns in which the assistant called get_weather (and get_time, when `both`) and answered:
    SmolLM2 (135M) does not start a call by itself under `auto` without an example of the format."""
    out = []
    for i, city in enumerate(cities):
        ask = f"What are the weather and the time in {city}?" if both else f"What is the weather in {city}?"
        calls = [{"id": f"call_{i}w", "type": "function",
                  "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]
        results = [{"role": "tool", "tool_call_id": f"call_{i}w", "content": '{"temperature": 20}'}]
        if both:
            calls.append({"id": f"call_{i}t", "type": "function",
                          "function": {"name": "get_time", "arguments": json.dumps({"city": city})}})
            results.append({"role": "tool", "tool_call_id": f"call_{i}t", "content": '{"time": "10:00"}'})
        out += [{"role": "user", "content": ask}, {"role": "assistant", "content": None, "tool_calls": calls},
                *results, {"role": "assistant", "content": f"It is 20 degrees in {city}."}]
    return out


def test_parallel_tool_calls_false_gives_exactly_one_call(client):
    messages = shots(["Paris", "Berlin"], both=True) + [
        {"role": "user", "content": "What are the weather and the time in Rome?"}]
    counts = {}
    for parallel in (True, False):
        r = client.chat.completions.create(model=SMOL, messages=messages, tools=[WEATHER, TIME], tool_choice="required",
                                           parallel_tool_calls=parallel, max_tokens=MAX_TOKENS, temperature=0)
        (c,) = r.choices
        calls = calls_of(c.message)
        assert c.finish_reason == "tool_calls", (parallel, c.finish_reason, calls)
        check_calls(calls, [WEATHER, TIME])
        counts[parallel] = len(calls)
    assert counts[False] == 1, counts
    assert counts[True] >= 2, counts      # the same greedy request makes both calls when it may

    messages = shots(["Paris", "Berlin", "Madrid"], both=False) + [
        {"role": "user", "content": "What is the weather in Rome?"}]
    r = client.chat.completions.create(model=SMOL, messages=messages, tools=[WEATHER, TIME], tool_choice="auto",
                                       parallel_tool_calls=False, max_tokens=MAX_TOKENS, temperature=0)
    (c,) = r.choices
    assert c.finish_reason == "tool_calls" and len(calls_of(c.message)) == 1, (c.finish_reason, c.message)
    check_calls(calls_of(c.message), [WEATHER, TIME])


def test_auto_returns_content_or_valid_calls(agent_server):
    questions = ["What is the weather in Rome?", "Hello! How are you?", "Tell me a joke about cats.",
                 "What is the weather in Oslo?"]
    history = shots(["Paris", "Berlin", "Madrid"], both=False)

    async def one(aclient, job: tuple[int, int]):
        seed, k = job
        tools = tool_set_for(seed) + [WEATHER, TIME]
        calls, (finish,), content, tokens = await reply_of(
            aclient, messages=history + [{"role": "user", "content": questions[k]}], tools=tools, tool_choice="auto",
            max_tokens=MAX_TOKENS, temperature=1.0, seed=seed)
        return tools, finish, calls, content, tokens

    kinds = []
    jobs = [(seed, k) for seed in range(6) for k in range(4)]
    for tools, finish, calls, content, tokens in run_concurrently(agent_server, one, jobs):
        if finish == "tool_calls":
            assert calls, content
            check_calls(calls, tools)
            kinds.append("calls")
        elif finish == "stop":
            assert not calls and content and content.strip(), (calls, content)
            assert "<tool_call>" not in content, content
            kinds.append("content")
        else:
            assert finish == "length" and tokens == MAX_TOKENS, (finish, tokens)
            check_calls(calls[:-1], tools)
            kinds.append("length")
    assert {"calls", "content"} <= set(kinds), kinds     # 24 replies: both kinds come up


def test_tool_choice_none_leaves_tools_out(client):
    r = chat(client, [WEATHER], "none", prompt="What is the weather in Paris?", max_tokens=48)
    (c,) = r.choices
    assert not c.message.tool_calls and c.message.content
    assert c.finish_reason in ("stop", "length")
    without = client.chat.completions.create(model=SMOL, max_tokens=48, temperature=0,
                                             messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert r.usage.prompt_tokens == without.usage.prompt_tokens   # the tools are not in the prompt
    assert c.message.content == without.choices[0].message.content


# -- histories ----------------------------------------------------------------------------------------------

HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc123", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
    {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temperature": 21, "sky": "sunny"}'},
]


def test_a_history_with_tool_calls_and_results_is_answered(client):
    r = client.chat.completions.create(model=SMOL, messages=HISTORY, tools=[WEATHER, TIME], max_tokens=64,
                                       temperature=0)
    (c,) = r.choices
    assert c.finish_reason in ("stop", "length", "tool_calls")
    if c.finish_reason == "tool_calls":
        check_calls(calls_of(c.message), [WEATHER, TIME])
    else:
        assert c.message.content and c.message.content.strip()
    shorter = client.chat.completions.create(model=SMOL, messages=HISTORY[:2], tools=[WEATHER, TIME], max_tokens=1)
    assert r.usage.prompt_tokens > shorter.usage.prompt_tokens + 10    # the call and its result are in the prompt

    # the answer, then a second round: the model is asked to call again and does, validly
    messages = HISTORY + [{"role": "assistant", "content": "It is 21 degrees and sunny in Paris."},
                          {"role": "user", "content": "And what time is it there?"}]
    r = client.chat.completions.create(model=SMOL, messages=messages, tools=[WEATHER, TIME], tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=64, temperature=0)
    (c,) = r.choices
    assert c.finish_reason == "tool_calls"
    check_calls(calls_of(c.message), [WEATHER, TIME])

    # the same history streamed, with the tools left out (tool_choice none): plain content
    stream = client.chat.completions.create(model=SMOL, messages=HISTORY, tools=[WEATHER], tool_choice="none",
                                            max_tokens=32, temperature=0, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text.strip()


def test_a_reply_with_calls_round_trips_as_history(client):
    """What the server answered goes back in as the next request's history, as an agent loop sends it."""
    r = chat(client, [WEATHER], named("get_weather"), prompt="Weather in Oslo?")
    message = r.choices[0].message
    history = [{"role": "user", "content": "Weather in Oslo?"}, message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": call.id, "content": '{"temperature": -3}'}
                for call in message.tool_calls]
    r = client.chat.completions.create(model=SMOL, messages=history, tools=[WEATHER], max_tokens=48,
                                       temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


# -- errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tools, tool_choice, param", [
    ([WEATHER], named("no_such_function"), "tool_choice"),
    ([WEATHER, TIME], named("get_weather_"), "tool_choice"),
    (None, "required", "tool_choice"),
    (None, named("get_weather"), "tool_choice"),
])
def test_a_bad_tool_choice_is_a_400(client, tools, tool_choice, param):
    kwargs = {"tools": tools} if tools else {}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                       tool_choice=tool_choice, **kwargs)
    assert caught.value.param == param, caught.value.body
    assert caught.value.type == "invalid_request_error"


def test_a_tool_with_an_invalid_parameter_schema_is_a_400(client):
    bad = {"type": "function", "function": {"name": "bad", "parameters": {
        "type": "object", "properties": {"x": {"type": "nonsense"}}}}}
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, [bad], "required", max_tokens=8)
    assert caught.value.param == "tools", caught.value.body


def test_the_server_still_serves_after_the_errors(client):
    r = chat(client, [WEATHER], named("get_weather"), prompt="Weather in Rome?")
    assert r.choices[0].finish_reason == "tool_calls"
    check_calls(calls_of(r.choices[0].message), [WEATHER], "get_weather")
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments)["city"]
