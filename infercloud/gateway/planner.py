"""RoutePlanner: turns a request's facts into what the router needs (prompt block hashes, load estimate).

For models routed `prefix_aware` (and, with tenancy, every chat model, so budgets count the prompt
exactly) whose weights are on this machine, the prompt is tokenized exactly as
the worker will (chat template for messages, plain encoding for a string prompt, token ids as given)
and hashed into the engine's chained block hashes, so they match the keys of the workers' prefix
caches. Other models skip tokenization and estimate prompt tokens from the body size.

A completion may hold a batch of prompts (OpenAI's list of strings or of token-id lists): its prompt tokens
are those of every prompt, its new tokens the bound (openai/protocol.max_new_tokens: what it asks for, else
what the context window leaves; `default_max_tokens` while the window is not known) for each of its
choices, and its hashes the first prompt's. Admission reserves exactly what the plan counts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import TypeAdapter

from infercloud.config import ModelSpec
from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.engine.tokenizer import ChatTemplateError, Tokenizer
from infercloud.models.catalog import resolve_model
from infercloud.models.local import LocalModel
from infercloud.gateway.facts import RequestFacts
from infercloud.openai.protocol import ChatMessage, ChatTool, max_new_tokens
from infercloud.openai.tool_calls import chat_prompt_ids
from infercloud.router.base import RouteRequest, RoutingPolicy, make_policy

_MESSAGES = TypeAdapter(list[ChatMessage])
_TOOLS = TypeAdapter(list[ChatTool])

_BYTES_PER_TOKEN = 4  # rough, for load estimates only


@dataclass(frozen=True)
class Plan:
    route: RouteRequest
    new_tokens: int = 0        # the most it may generate, all choices together
    native_only: bool = False  # only the model's own workers may take it (not its external replicas)
    num_choices: int = 1       # choices it streams: n for each prompt (only a single one migrates mid-stream)

    @property
    def outstanding_tokens(self) -> int:
        """Prompt + max new tokens: what this request adds to a replica's load (and reserves of a tenant's)."""
        return self.route.num_prompt_tokens + self.new_tokens


class ModelRoute:
    """One model's routing: its policy and (for prefix_aware) its tokenizer and block size."""

    def __init__(self, spec: ModelSpec, policy: RoutingPolicy, tokenizer: Tokenizer | None):
        self.spec = spec
        self.policy = policy
        self.tokenizer = tokenizer
        self.block_size = spec.engine.block_size


class RoutePlanner:
    def __init__(self, models: tuple[ModelSpec, ...], default_max_tokens: int, rng: random.Random,
                 margin_tokens: int, margin_ratio: float, tokenize_all: bool = False,
                 max_model_len: Callable[[str], int | None] = lambda model: None):
        """`tokenize_all`: count every chat prompt exactly (budgets need it), not only prefix_aware ones.
        `max_model_len`: a model's context window, as its replicas report it (None until one has)."""
        self.default_max_tokens = default_max_tokens
        self.max_model_len = max_model_len
        self.routes: dict[str, ModelRoute] = {}
        for spec in models:
            options = {"margin_tokens": margin_tokens, "margin_ratio": margin_ratio} \
                if spec.routing == "prefix_aware" else {}
            policy = make_policy(spec.routing, random.Random(rng.getrandbits(64)), **options)
            wants_ids = spec.routing == "prefix_aware" or tokenize_all
            tokenizer = _load_tokenizer(spec) if wants_ids and spec.kind == "chat" else None
            self.routes[spec.name] = ModelRoute(spec, policy, tokenizer)

    def plan(self, facts: RequestFacts) -> Plan:
        route = self.routes[facts.model]
        hashes: list[bytes] = []
        prompts = _prompt_ids(route.tokenizer, facts.body) if route.tokenizer is not None else None
        if prompts is not None:
            num_prompt, longest = sum(map(len, prompts)), max(map(len, prompts), default=0)
        else:
            num_prompt = facts.raw_size // _BYTES_PER_TOKEN
            longest = num_prompt // facts.num_prompts
        if prompts and route.spec.routing == "prefix_aware":
            hashes = hash_token_blocks(prompts[0], route.block_size, facts.salt)   # the worker's cache keys
        new_tokens = 0
        if facts.is_generation:
            bound = max_new_tokens(facts.max_new_tokens, self.max_model_len(facts.model), longest)
            new_tokens = (bound if bound is not None else self.default_max_tokens) * facts.num_choices
        request = RouteRequest(facts.model, tuple(hashes), num_prompt, session_key=facts.session, tenant=facts.tenant,
                               priority=facts.priority, region=facts.region, allowed_regions=facts.allowed_regions)
        return Plan(request, new_tokens, num_choices=facts.num_choices)


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
