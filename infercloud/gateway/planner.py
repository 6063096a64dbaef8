"""RoutePlanner: turns a request body into what the router needs (prompt block hashes, load estimate).

For models routed `prefix_aware` (and, with tenancy, every chat model, so budgets count the prompt
exactly) whose weights are on this machine, the prompt is tokenized exactly as
the worker will (chat template for messages, plain encoding for a string prompt, token ids as given)
and hashed into the engine's chained block hashes, so they match the keys of the workers' prefix
caches. Other models skip tokenization and estimate prompt tokens from the body size.

A completion may hold a batch of prompts (OpenAI's list of strings or of token-id lists): its prompt tokens
are those of every prompt, its new tokens max_tokens x n for each prompt, and its hashes the first prompt's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import TypeAdapter

from infercloud.config import ModelSpec
from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.engine.tokenizer import ChatTemplateError, Tokenizer
from infercloud.models.catalog import resolve_model
from infercloud.models.local import LocalModel
from infercloud.openai.protocol import ChatMessage, ChatTool
from infercloud.openai.tool_calls import chat_prompt_ids
from infercloud.router.base import RouteRequest, RoutingPolicy, make_policy

_MESSAGES = TypeAdapter(list[ChatMessage])
_TOOLS = TypeAdapter(list[ChatTool])

_BYTES_PER_TOKEN = 4  # rough, for load estimates only


@dataclass(frozen=True)
class Plan:
    route: RouteRequest
    outstanding_tokens: int   # prompt + max new tokens: what this request adds to a replica's load
    native_only: bool = False  # only the model's own workers may take it (not its external replicas)
    num_choices: int = 1      # choices it streams: n for each prompt (only a single one migrates mid-stream)


class ModelRoute:
    """One model's routing: its policy and (for prefix_aware) its tokenizer and block size."""

    def __init__(self, spec: ModelSpec, policy: RoutingPolicy, tokenizer: Tokenizer | None):
        self.spec = spec
        self.policy = policy
        self.tokenizer = tokenizer
        self.block_size = spec.engine.block_size


class RoutePlanner:
    def __init__(self, models: tuple[ModelSpec, ...], default_max_tokens: int, rng: random.Random,
                 margin_tokens: int, margin_ratio: float, tokenize_all: bool = False):
        """`tokenize_all`: count every chat prompt exactly (budgets need it), not only prefix_aware ones."""
        self.default_max_tokens = default_max_tokens
        self.routes: dict[str, ModelRoute] = {}
        for spec in models:
            options = {"margin_tokens": margin_tokens, "margin_ratio": margin_ratio} \
                if spec.routing == "prefix_aware" else {}
            policy = make_policy(spec.routing, random.Random(rng.getrandbits(64)), **options)
            wants_ids = spec.routing == "prefix_aware" or tokenize_all
            tokenizer = _load_tokenizer(spec) if wants_ids and spec.kind == "chat" else None
            self.routes[spec.name] = ModelRoute(spec, policy, tokenizer)

    def plan(self, model: str, body: dict, raw_size: int, session_header: str | None,
             cache_salt: str | None = None, tenant: str | None = None, priority: int = 0,
             region: str | None = None, allowed_regions: frozenset[str] | None = None) -> Plan:
        """`cache_salt`: the salt the worker will hash the prompt with (the hashes must match its cache)."""
        route = self.routes[model]
        hashes: list[bytes] = []
        prompts = _prompt_ids(route.tokenizer, body) if route.tokenizer is not None else None
        num_prompt = sum(map(len, prompts)) if prompts is not None else raw_size // _BYTES_PER_TOKEN
        if prompts and route.spec.routing == "prefix_aware":
            hashes = hash_token_blocks(prompts[0], route.block_size, cache_salt)
        max_new = body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens
        n = body.get("n") if isinstance(body.get("n"), int) else 1
        session = session_header or (body.get("user") if isinstance(body.get("user"), str) else None)
        request = RouteRequest(model, tuple(hashes), num_prompt, session_key=session or None, tenant=tenant,
                               priority=priority, region=region, allowed_regions=allowed_regions)
        extra = max_new * max(n, 1) if isinstance(max_new, int) else self.default_max_tokens
        return Plan(request, num_prompt + extra * num_prompts(body), num_choices=n * num_prompts(body))


def num_prompts(body: dict) -> int:
    """How many prompts a request holds: a completion's batch (a list of strings or of token-id lists), else 1."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return len(prompt)
    return 1


def _load_tokenizer(spec: ModelSpec) -> Tokenizer | None:
    try:
        return Tokenizer(LocalModel.open(resolve_model(spec.source)))
    except (LookupError, OSError, ValueError):
        return None  # weights not on this machine (an external-only model): route without hashes


def _prompt_ids(tokenizer: Tokenizer, body: dict) -> list[list[int]] | None:
    """Each prompt's token ids as the worker will compute them (several for a batch of completion prompts);
    None when the body is not well formed."""
    try:
        if "messages" in body:
            messages = _MESSAGES.validate_python(body["messages"])
            tools = _TOOLS.validate_python(body.get("tools") or [])
            return [chat_prompt_ids(tokenizer, messages, tools, body.get("tool_choice"))]
        prompt = body.get("prompt")
        if isinstance(prompt, str) or _is_ids(prompt):
            return [_one_prompt(tokenizer, prompt)]
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) or _is_ids(p) for p in prompt):
            return [_one_prompt(tokenizer, p) for p in prompt]
    except (KeyError, TypeError, ValueError, ChatTemplateError):   # pydantic's ValidationError is a ValueError
        pass
    return None


def _one_prompt(tokenizer: Tokenizer, prompt: str | list[int]) -> list[int]:
    return tokenizer.encode(prompt) if isinstance(prompt, str) else prompt


def _is_ids(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
