"""The worker's OpenAI/vLLM extras on a real server: GET /v1/models/{id}, /tokenize, /detokenize, /version and
embeddings `dimensions` (a Matryoshka copy of MiniLM is served by an internal_only worker of its own)."""

from __future__ import annotations

import base64
import json
import math

import httpx
import openai
import pytest

import infercloud
from infercloud.models.pull import pull
from tests.worker.conftest import start_server

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
TEXT = "The quick brown fox jumps over the lazy dog."
MESSAGES = [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Name a prime number."}]


def post(server, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60, **kwargs)


def error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


# -- GET /v1/models/{id} ----------------------------------------------------------------------------------

def test_the_openai_client_retrieves_a_model_as_the_list_shows_it(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    listed = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]}
    for name in (CHAT, EMBED):
        model = client.models.retrieve(name)
        assert (model.id, model.object, model.owned_by) == (name, "model", "infercloud")
        assert model.model_dump(exclude_unset=True) == listed[name]
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


def test_an_unknown_model_id_is_a_404_in_openais_shape(server):
    found = error(httpx.get(f"{server.url}/v1/models/org/no-such-model", timeout=10), 404)
    assert found == {"message": "The model `org/no-such-model` does not exist.", "type": "invalid_request_error",
                     "param": "model", "code": "model_not_found"}


# -- /tokenize and /detokenize ------------------------------------------------------------------------------

def test_a_prompt_tokenizes_as_a_completion_counts_it_and_detokenizes_back(server):
    tokens = post(server, "/tokenize", {"model": CHAT, "prompt": TEXT}).json()
    completion = post(server, "/v1/completions", {"model": CHAT, "prompt": TEXT, "max_tokens": 1}).json()
    card = httpx.get(f"{server.url}/v1/models/{CHAT}", timeout=10).json()
    assert tokens["count"] == len(tokens["tokens"]) == completion["usage"]["prompt_tokens"]
    assert tokens["max_model_len"] == card["max_model_len"] > 0
    assert tokens["token_strs"] is None
    assert post(server, "/detokenize", {"model": CHAT, "tokens": tokens["tokens"]}).json() == {"prompt": TEXT}


def test_messages_tokenize_as_a_chat_request_renders_them(server):
    tokens = post(server, "/tokenize", {"model": CHAT, "messages": MESSAGES}).json()
    chat = post(server, "/v1/chat/completions", {"model": CHAT, "messages": MESSAGES, "max_tokens": 1}).json()
    assert tokens["count"] == chat["usage"]["prompt_tokens"]
    bare = post(server, "/tokenize", {"model": CHAT, "messages": MESSAGES, "add_generation_prompt": False}).json()
    assert bare["tokens"] == tokens["tokens"][:bare["count"]] and bare["count"] < tokens["count"]
    text = post(server, "/detokenize", {"model": CHAT, "tokens": tokens["tokens"]}).json()["prompt"]
    assert text.startswith("<|im_start|>system\nBe terse.<|im_end|>") and text.endswith("<|im_start|>assistant\n")


def test_tools_and_tool_messages_tokenize_as_a_chat_request_renders_them(server):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
                   "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    tokens = post(server, "/tokenize", {"model": CHAT, "messages": history, "tools": tools}).json()
    chat = post(server, "/v1/chat/completions", {"model": CHAT, "messages": history, "tools": tools,
                                                 "max_tokens": 1}).json()
    assert tokens["count"] == chat["usage"]["prompt_tokens"]
    text = post(server, "/detokenize", {"model": CHAT, "tokens": tokens["tokens"]}).json()["prompt"]
    assert "get_weather" in text and "<tool_response>\nsunny\n</tool_response>" in text


def test_token_strings_come_when_asked(server):
    tokens = post(server, "/tokenize", {"model": CHAT, "prompt": "Hello world", "return_token_strs": True}).json()
    assert len(tokens["token_strs"]) == tokens["count"] and "".join(tokens["token_strs"]).endswith("world")


def test_an_embedding_model_tokenizes_with_its_own_tokenizer(server):
    tokens = post(server, "/tokenize", {"model": EMBED, "prompt": TEXT}).json()
    embedded = post(server, "/v1/embeddings", {"model": EMBED, "input": TEXT}).json()
    assert tokens["count"] == embedded["usage"]["prompt_tokens"] and tokens["max_model_len"] == 256
    plain = post(server, "/tokenize", {"model": EMBED, "prompt": TEXT, "add_special_tokens": False}).json()
    assert plain["tokens"] == tokens["tokens"][1:-1]   # no [CLS] and [SEP]
    text = post(server, "/detokenize", {"model": EMBED, "tokens": plain["tokens"]}).json()["prompt"]
    assert text == TEXT.lower()   # an uncased vocabulary
    refused = error(post(server, "/tokenize", {"model": EMBED, "messages": MESSAGES}), 400)
    assert refused["param"] == "messages" and "chat template" in refused["message"]


@pytest.mark.parametrize("path, body, param", [
    ("/tokenize", {"model": CHAT}, "prompt"),
    ("/tokenize", {"model": CHAT, "prompt": 5}, "prompt"),
    ("/tokenize", {"model": CHAT, "prompt": "a", "messages": MESSAGES}, "prompt"),
    ("/tokenize", {"model": CHAT, "messages": []}, "messages"),
    ("/tokenize", {"model": CHAT, "messages": [{"role": "robot", "content": "x"}]}, "messages"),
    ("/tokenize", {"model": CHAT, "prompt": "a", "add_generation_prompt": True}, "add_generation_prompt"),
    ("/tokenize", {"model": CHAT, "prompt": "a", "continue_final_message": True}, "continue_final_message"),
    ("/tokenize", {"prompt": "a"}, "model"),
    ("/detokenize", {"model": CHAT}, "tokens"),
    ("/detokenize", {"model": CHAT, "tokens": [1, -1]}, "tokens"),
    ("/detokenize", {"model": CHAT, "tokens": [2**40]}, "tokens"),
    ("/detokenize", {"model": CHAT, "tokens": [1, 10**6]}, "tokens"),
    ("/detokenize", {"model": EMBED, "tokens": [30522]}, "tokens"),
    ("/detokenize", {"model": CHAT, "tokens": ["a"]}, "tokens"),
])
def test_bad_input_is_a_400_naming_the_field(server, path, body, param):
    assert error(post(server, path, body), 400)["param"] == param


@pytest.mark.parametrize("path, body", [("/tokenize", {"model": "nope", "prompt": "a"}),
                                        ("/detokenize", {"model": "nope", "tokens": [1]})])
def test_an_unknown_model_is_a_404(server, path, body):
    assert error(post(server, path, body), 404)["code"] == "model_not_found"


def test_tokenize_bodies_are_limited_like_the_api(server):
    found = error(post(server, "/tokenize", {"model": CHAT, "prompt": "a" * 300_000}), 413)
    assert found["code"] == "request_too_large"
    assert error(httpx.post(f"{server.url}/tokenize", content=b"{nope", timeout=10), 400)["param"] is None


def test_version_and_the_schema_of_the_new_bodies(server):
    assert httpx.get(f"{server.url}/version", timeout=10).json() == {"version": infercloud.__version__}
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    for path, model in (("/tokenize", "TokenizeRequest"), ("/detokenize", "DetokenizeRequest")):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
    assert "dimensions" in schema["components"]["schemas"]["EmbeddingRequest"]["properties"]


# -- embeddings `dimensions` --------------------------------------------------------------------------------

def embed(server, model: str, auth: bool = False, **fields) -> httpx.Response:
    return post(server, "/v1/embeddings", {"model": model, "input": [TEXT, "paged attention"], **fields},
                headers=server.auth if auth else None)


def vectors(response: httpx.Response) -> list[list[float]]:
    assert response.status_code == 200, response.text
    return [row["embedding"] for row in response.json()["data"]]


def test_a_model_not_trained_for_fewer_dimensions_takes_only_its_own(server):
    assert vectors(embed(server, EMBED, dimensions=384)) == vectors(embed(server, EMBED))
    refused = error(embed(server, EMBED, dimensions=128), 400)
    assert (refused["param"], refused["code"]) == ("dimensions", "unsupported_dimensions")
    assert "Matryoshka" in refused["message"] and "384" in refused["message"]
    assert error(embed(server, EMBED, dimensions=0), 400)["param"] == "dimensions"


@pytest.fixture(scope="module")
def matryoshka(tmp_path_factory):
    """MiniLM's folder (linked) with a config.json that declares Matryoshka sizes, on an internal_only worker."""
    original = pull(EMBED, progress=False)
    folder = tmp_path_factory.mktemp("matryoshka") / "mini"
    folder.mkdir()
    for item in original.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((original / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [64, 128, 256]}))
    proc = start_server(tmp_path_factory.mktemp("matryoshka-server"), {
        "internal_only": True, "models": [{"name": "mini", "kind": "embedding", "path": str(folder)}]})
    yield proc
    assert proc.stop() == 0, proc.log()


def test_a_matryoshka_model_cuts_and_renormalizes(matryoshka):
    full = vectors(embed(matryoshka, "mini", auth=True))
    cut = vectors(embed(matryoshka, "mini", dimensions=128, auth=True))
    for whole, short in zip(full, cut):
        assert len(short) == 128
        norm = math.sqrt(sum(x * x for x in whole[:128]))
        assert short == pytest.approx([x / norm for x in whole[:128]], abs=1e-5)
        assert math.sqrt(sum(x * x for x in short)) == pytest.approx(1.0, abs=1e-5)
    packed = embed(matryoshka, "mini", dimensions=64, encoding_format="base64", auth=True).json()
    assert len(base64.b64decode(packed["data"][0]["embedding"])) == 64 * 4   # float32s
    refused = error(embed(matryoshka, "mini", dimensions=100, auth=True), 400)
    assert refused["param"] == "dimensions" and "64, 128, 256" in refused["message"]
    assert error(embed(matryoshka, "mini", dimensions=385, auth=True), 400)["param"] == "dimensions"


def test_an_internal_only_worker_asks_for_the_token_on_the_vllm_paths(matryoshka):
    for method, path, body in (("POST", "/tokenize", {"model": "mini", "prompt": "a"}),
                               ("POST", "/detokenize", {"model": "mini", "tokens": [101]}),
                               ("GET", "/version", None), ("GET", "/v1/models/mini", None)):
        denied = httpx.request(method, matryoshka.url + path, json=body, timeout=10)
        assert error(denied, 401)["code"] == "internal_token_required"
        assert httpx.request(method, matryoshka.url + path, json=body, headers=matryoshka.auth,
                             timeout=10).status_code == 200
