"""The agent API as LangChain (langchain-openai) and LiteLLM call it, against a real single-box server.

Nothing here may reach the internet: LangChain's OpenAI classes go only to `base_url`; LiteLLM reads its model
cost map from its own package (LITELLM_LOCAL_MODEL_COST_MAP, set before it is imported) and counts tokens
with the tokenizer files it ships.
"""

from __future__ import annotations

import importlib
import json
import socket

import httpx
import pytest
from pydantic import BaseModel, Field

from tests.agents.conftest import SMOL, validate

WEATHER_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "unit"], "properties": {
    "city": {"type": "string", "maxLength": 20},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
                                            "parameters": WEATHER_SCHEMA}}


class Movie(BaseModel):
    """A film and its year."""

    title: str = Field(max_length=12, description="the film's title")
    year: int = Field(ge=1900, le=2030)
    rating: float = Field(ge=0, le=10)


MOVIE_DICT_SCHEMA = {"title": "movie", "description": "A film and its year.", "type": "object",
                     "additionalProperties": False, "required": ["title", "year"], "properties": {
                         "title": {"type": "string", "maxLength": 12},
                         "year": {"type": "integer", "minimum": 1900, "maximum": 2030}}}


LOCAL = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Every connection and name lookup beyond this machine fails, and the module fails if one was tried."""
    tried: list = []
    connect, lookup = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if isinstance(address, tuple) and address[0] not in LOCAL:
            tried.append(address)
            raise OSError(f"the agent client tests are offline: connect to {address}")
        return connect(sock, address)

    def guarded_lookup(host, *args, **kwargs):
        if host is not None and (host.decode() if isinstance(host, bytes) else host) not in LOCAL:
            tried.append(host)
            raise socket.gaierror(f"the agent client tests are offline: lookup of {host}")
        return lookup(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect)
        patch.setattr(socket, "getaddrinfo", guarded_lookup)
        yield
    assert not tried, f"a client tried to reach beyond this machine: {tried}"


@pytest.fixture(scope="module")
def base_url(agent_server) -> str:
    return f"{agent_server.url}/v1"


@pytest.fixture(scope="module")
def chat_model(base_url):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=SMOL, base_url=base_url, api_key="unused", temperature=0, max_tokens=128,
                      max_retries=0, timeout=300)


# -- LangChain ChatOpenAI -----------------------------------------------------------------------------------

def test_langchain_plain_chat(chat_model):
    from langchain_core.messages import AIMessage

    reply = chat_model.invoke("Say hello in one word.")
    assert isinstance(reply, AIMessage) and reply.content.strip()
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    assert reply.usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize("tool_choice", ["get_weather", "any", "required"])
def test_langchain_bind_tools_gives_tool_calls(chat_model, tool_choice):
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str, unit: str = "celsius") -> str:
        """The current weather in a city."""
        return f"21 degrees {unit} in {city}"

    llm = chat_model.bind_tools([get_weather, WEATHER["function"] | {"name": "get_forecast"}],
                                tool_choice=tool_choice, parallel_tool_calls=False)
    reply = llm.invoke("What is the weather in Paris?")
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert len(reply.tool_calls) == 1, reply.tool_calls
    (call,) = reply.tool_calls
    assert call["type"] == "tool_call" and call["id"]
    schemas = {"get_weather": get_weather.tool_call_schema.model_json_schema(), "get_forecast": WEATHER_SCHEMA}
    assert call["name"] in schemas and (tool_choice != "get_weather" or call["name"] == "get_weather")
    assert isinstance(call["args"], dict)
    validate(call["args"], schemas[call["name"]])
    assert not reply.invalid_tool_calls

    if call["name"] == "get_weather":        # the agent loop: run the tool, send its result back, get an answer
        from langchain_core.messages import HumanMessage

        result = get_weather.invoke(call)
        answer = chat_model.bind_tools([get_weather]).invoke(
            [HumanMessage("What is the weather in Paris?"), reply, result])
        assert answer.content.strip() or answer.tool_calls


def test_langchain_streamed_tool_call_chunks_add_up(chat_model):
    llm = chat_model.bind_tools([WEATHER], tool_choice="get_weather")
    whole = llm.invoke("Weather in Rome?")
    chunks = list(llm.stream("Weather in Rome?"))
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [(c["name"], c["args"]) for c in whole.tool_calls]
    validate(total.tool_calls[0]["args"], WEATHER_SCHEMA)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output_with_a_pydantic_model(chat_model, method):
    movie = chat_model.with_structured_output(Movie, method=method).invoke("Name a famous movie.")
    assert isinstance(movie, Movie), movie
    validate(movie.model_dump(), Movie.model_json_schema())


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output_with_a_dict_schema(chat_model, method):
    out = chat_model.with_structured_output(MOVIE_DICT_SCHEMA, method=method, strict=True,
                                            include_raw=True).invoke("Name a famous movie.")
    assert out["parsing_error"] is None, out
    assert isinstance(out["parsed"], dict)
    validate(out["parsed"], MOVIE_DICT_SCHEMA)
    raw = out["raw"]
    if method == "function_calling":
        assert raw.tool_calls[0]["name"] == "movie"
    else:
        assert json.loads(raw.content) == out["parsed"]


def test_langchain_responses_api(agent_server, base_url):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=SMOL, base_url=base_url, api_key="unused", temperature=0, max_tokens=64,
                     max_retries=0, timeout=300, use_responses_api=True)
    reply = llm.invoke("Say hello.")
    assert reply.text.strip(), reply
    assert reply.response_metadata.get("id", "").startswith("resp"), reply.response_metadata

    calls = llm.bind_tools([WEATHER], tool_choice="get_weather").invoke("Weather in Paris?").tool_calls
    assert len(calls) == 1 and calls[0]["name"] == "get_weather", calls
    validate(calls[0]["args"], WEATHER_SCHEMA)

    movie = llm.with_structured_output(Movie, method="json_schema").invoke("Name a famous movie.")
    assert isinstance(movie, Movie), movie


# -- LangChain's completions-style OpenAI class ---------------------------------------------------------------

def test_langchain_completions_llm_generates_for_several_prompts(agent_server, base_url):
    from langchain_openai import OpenAI

    prompts = ["The capital of France is", "One, two, three,", "The opposite of hot is"]
    llm = OpenAI(model=SMOL, base_url=base_url, api_key="unused", temperature=0, max_tokens=12, max_retries=0,
                 timeout=300)
    result = llm.generate(prompts)
    assert len(result.generations) == 3
    for gens in result.generations:
        assert len(gens) == 1 and gens[0].text.strip()
        assert gens[0].generation_info["finish_reason"] in ("stop", "length")
    # the same texts as one request per prompt
    for prompt, gens in zip(prompts, result.generations):
        alone = httpx.post(f"{base_url}/completions", timeout=120, json={
            "model": SMOL, "prompt": prompt, "temperature": 0, "max_tokens": 12}).json()
        assert alone["choices"][0]["text"] == gens[0].text
    assert result.llm_output["token_usage"]["completion_tokens"] > 0


# -- LiteLLM ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def litellm():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        patch.setenv("LITELLM_TELEMETRY", "False")
        module = importlib.import_module("litellm")
        module.telemetry = False
        yield module


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_litellm_completion_with_tools(litellm, base_url, tool_choice):
    reply = litellm.completion(model=f"openai/{SMOL}", api_base=base_url, api_key="unused",
                               messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                               tools=[WEATHER], tool_choice=tool_choice, parallel_tool_calls=False,
                               temperature=0, max_tokens=128, timeout=300)
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id
    validate(json.loads(call.function.arguments), WEATHER_SCHEMA)


def test_litellm_streamed_tool_call(litellm, base_url):
    stream = litellm.completion(model=f"openai/{SMOL}", api_base=base_url, api_key="unused",
                                messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
                                tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=128,
                                parallel_tool_calls=False, stream=True, timeout=300)
    chunks = list(stream)
    reply = litellm.stream_chunk_builder(chunks)
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    validate(json.loads(call.function.arguments), WEATHER_SCHEMA)


def test_litellm_structured_output(litellm, base_url):
    reply = litellm.completion(model=f"openai/{SMOL}", api_base=base_url, api_key="unused",
                               messages=[{"role": "user", "content": "Name a famous movie."}],
                               response_format={"type": "json_schema", "json_schema": {
                                   "name": "movie", "schema": MOVIE_DICT_SCHEMA, "strict": True}},
                               temperature=0, max_tokens=128, timeout=300)
    assert reply.choices[0].finish_reason == "stop"
    validate(json.loads(reply.choices[0].message.content), MOVIE_DICT_SCHEMA)
