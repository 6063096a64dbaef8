"""RoutePlanner: the gateway's prompt hashes must be the worker engine's prefix-cache keys; the load a
request adds follows the one max-new-tokens rule; a request's facts as the body states them."""

from __future__ import annotations

import json
import random

import pytest

from infercloud.config import ModelSpec
from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.engine.tokenizer import Tokenizer
from infercloud.gateway.facts import RequestFacts
from infercloud.gateway.planner import RoutePlanner
from infercloud.models.local import LocalModel

MODEL = "smollm2-135m-instruct"
BS = 16

CHAT = [
    {"role": "developer", "content": "You are a terse assistant who answers questions about geography."},
    {"role": "user", "content": [{"type": "text", "text": "What is the capital of France? "},
                                 {"type": "text", "text": "Answer in one word, please."}]},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And the capital of Italy, with a short note on its history and its rivers?"},
]


def planner(*specs: ModelSpec, default_max_tokens: int = 256, max_model_len: int | None = None) -> RoutePlanner:
    return RoutePlanner(specs, default_max_tokens=default_max_tokens, rng=random.Random(0),
                        margin_tokens=4096, margin_ratio=1.5, max_model_len=lambda model: max_model_len)


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir) -> Tokenizer:
    return Tokenizer(LocalModel.open(smollm2_dir))


@pytest.fixture(scope="module")
def prefix_planner(smollm2_dir) -> RoutePlanner:
    p = planner(ModelSpec(MODEL, path=str(smollm2_dir), routing="prefix_aware"))
    assert p.routes[MODEL].tokenizer is not None
    return p


def facts(body: dict, model: str = MODEL, raw_size: int | None = None, **settled) -> RequestFacts:
    size = len(json.dumps(body)) if raw_size is None else raw_size
    return RequestFacts.of(body, raw_size=size, **{"model": model, **settled})


def plan(p: RoutePlanner, body: dict, session: str | None = None, model: str = MODEL):
    return p.plan(facts(body, model, **({"session": session} if session else {})))


def worker_chat_ids(tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """What LLMService.chat feeds the engine: developer -> system, text parts joined."""
    def text(content):
        return content if isinstance(content, str) else "".join(part["text"] for part in content)
    return tokenizer.encode_chat([{"role": "system" if m["role"] == "developer" else m["role"],
                                   "content": text(m["content"])} for m in messages])


# -- hashes --------------------------------------------------------------------------------------

def test_chat_hashes_are_the_engines(prefix_planner, tokenizer):
    ids = worker_chat_ids(tokenizer, CHAT)
    assert len(ids) > 3 * BS
    expected = hash_token_blocks(ids, BS)
    route = plan(prefix_planner, {"model": MODEL, "messages": CHAT}).route
    assert list(route.prompt_block_hashes) == expected
    assert len(expected) == len(ids) // BS
    assert route.num_prompt_tokens == len(ids)


def test_developer_role_and_text_parts_match_plain_forms(prefix_planner):
    plain = [{"role": "system", "content": CHAT[0]["content"]},
             {"role": "user", "content": "What is the capital of France? Answer in one word, please."},
             *CHAT[2:]]
    assert (plan(prefix_planner, {"messages": CHAT}).route.prompt_block_hashes
            == plan(prefix_planner, {"messages": plain}).route.prompt_block_hashes)


def test_completion_prompts(prefix_planner, tokenizer):
    text = "Once upon a time, in a land far away, there lived a king who had three daughters. " * 3
    ids = tokenizer.encode(text)
    assert len(ids) > 3 * BS
    assert list(plan(prefix_planner, {"prompt": text}).route.prompt_block_hashes) == hash_token_blocks(ids, BS)
    by_ids = plan(prefix_planner, {"prompt": ids}).route
    assert list(by_ids.prompt_block_hashes) == hash_token_blocks(ids, BS)
    assert by_ids.num_prompt_tokens == len(ids)


@pytest.mark.parametrize("body", [
    {"messages": "hello"},
    {"messages": ["hello"]},
    {"messages": [{"content": "no role"}]},
    {"messages": None},
    {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"prompt": [["a"], ["b"]]},
    {"prompt": [1, "a"]},
    {"prompt": [[1], [2, None]]},
    {"prompt": [[1], [True]]},
    {"prompt": None},
    {},
])
def test_malformed_body_gives_no_hashes(prefix_planner, body):
    route = plan(prefix_planner, body).route
    assert route.prompt_block_hashes == ()
    assert route.num_prompt_tokens == len(json.dumps(body)) // 4


# -- batches of completion prompts -----------------------------------------------------------------

BATCH = ["Once upon a time, in a land far away, there lived a king who had three daughters. " * 2,
         "The quick brown fox jumps over the lazy dog.", "A"]


@pytest.mark.parametrize("as_ids", [False, True])
def test_a_batch_counts_every_prompt_and_hashes_the_first(prefix_planner, tokenizer, as_ids):
    ids = [tokenizer.encode(text) for text in BATCH]
    body = {"prompt": ids if as_ids else BATCH, "max_tokens": 10, "n": 2}
    p = plan(prefix_planner, body)
    assert p.route.num_prompt_tokens == sum(map(len, ids))
    assert list(p.route.prompt_block_hashes) == hash_token_blocks(ids[0], BS) != []
    assert p.outstanding_tokens == sum(map(len, ids)) + 10 * 2 * len(BATCH)


def test_a_batch_of_one_is_its_prompt(prefix_planner, tokenizer):
    single, batch = plan(prefix_planner, {"prompt": BATCH[0]}), plan(prefix_planner, {"prompt": BATCH[:1]})
    assert single == batch


@pytest.mark.parametrize("body, count", [
    ({"prompt": BATCH}, 3), ({"prompt": [[1, 2], [3]]}, 2), ({"prompt": [[1, 2]]}, 1), ({"prompt": [1, 2]}, 1),
    ({"prompt": "text"}, 1), ({"prompt": []}, 1), ({"messages": []}, 1), ({}, 1),
])
def test_num_prompts(body, count):
    assert facts(body).num_prompts == count


def test_a_batch_for_a_model_without_a_tokenizer_is_estimated_from_its_size():
    p = planner(ModelSpec("rr-model", routing="round_robin"))
    result = p.plan(facts({"prompt": BATCH, "max_tokens": 8}, "rr-model", raw_size=400))
    assert (result.route.num_prompt_tokens, result.outstanding_tokens) == (100, 100 + 8 * 3)


# -- load estimate and session -------------------------------------------------------------------

@pytest.mark.parametrize("fields, new_tokens", [
    ({}, 256),
    ({"max_tokens": 10}, 10),
    ({"max_completion_tokens": 7, "max_tokens": 10}, 7),
    ({"max_tokens": 10, "n": 3}, 30),
    ({"n": 2}, 512),
])
def test_outstanding_tokens(prefix_planner, fields, new_tokens):
    ids = list(range(100, 140))
    p = plan(prefix_planner, {"prompt": ids, **fields})
    assert p.route.num_prompt_tokens == 40
    assert p.outstanding_tokens == 40 + new_tokens


@pytest.mark.parametrize("header, user, key", [
    ("sess-1", "alice", "sess-1"),
    (None, "alice", "alice"),
    (None, "", None),
    (None, None, None),
    (None, 42, None),
])
def test_session_key(prefix_planner, header, user, key):
    body = {"prompt": [1, 2, 3]}
    if user is not None:
        body["user"] = user
    assert plan(prefix_planner, body, session=header).route.session_key == key


# -- models routed without hashes ----------------------------------------------------------------

def test_round_robin_model_estimates_from_size():
    p = planner(ModelSpec("rr-model", routing="round_robin"), default_max_tokens=100)
    assert p.routes["rr-model"].tokenizer is None
    result = p.plan(facts({"messages": CHAT, "max_tokens": 8}, "rr-model", raw_size=403))
    assert result.route.prompt_block_hashes == ()
    assert result.route.num_prompt_tokens == 100
    assert result.outstanding_tokens == 108


def test_prefix_aware_model_without_weights_routes_without_hashes(tmp_path):
    p = planner(ModelSpec("ext", path=str(tmp_path / "missing"), routing="prefix_aware"))
    assert p.routes["ext"].tokenizer is None
    assert p.plan(facts({"messages": CHAT}, "ext", raw_size=40)).route.prompt_block_hashes == ()


def test_without_max_tokens_a_request_counts_what_the_context_window_leaves():
    """The one rule (openai/protocol.max_new_tokens), as the worker applies it; the gateway's default stands
    in only while no replica has reported the model's window."""
    known = planner(ModelSpec("rr-model", routing="round_robin"), max_model_len=1000)
    result = known.plan(facts({"prompt": [[1] * 40, [2] * 60], "n": 2}, "rr-model", raw_size=400))
    assert result.new_tokens == (1000 - 50) * 4    # 100 tokens estimated from the size: 50 a prompt; 4 choices
    asked = known.plan(facts({"prompt": [1, 2], "max_tokens": 5}, "rr-model", raw_size=40))
    assert asked.new_tokens == 5
    embeddings = known.plan(RequestFacts.of({"model": "rr-model", "input": "x", "max_tokens": 5}, "/v1/embeddings",
                                            raw_size=40))
    assert embeddings.new_tokens == 0 and embeddings.outstanding_tokens == 10


@pytest.mark.parametrize("body, settled, expected", [
    ({"max_tokens": 10}, {}, (10, 1, 1, None)),
    ({"max_completion_tokens": 7, "max_tokens": 10, "n": 3, "user": "u"}, {}, (7, 3, 3, "u")),
    ({"prompt": ["a", "b"], "n": 2, "user": ""}, {}, (None, 2, 4, None)),
    ({"n": 0, "max_tokens": True}, {"session": "s"}, (None, 1, 1, "s")),
])
def test_facts_a_body_states(body, settled, expected):
    f = facts(body, **settled)
    assert (f.max_new_tokens, f.n, f.num_choices, f.session) == expected
    assert f.priority == 1 and f.tier == "standard"       # vLLM's convention: interactive 0, standard 1, batch 2
