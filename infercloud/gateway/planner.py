"""RoutePlanner: turns a request body into what the router needs (prompt block hashes, load estimate).

For models routed `prefix_aware` (and, with tenancy, every chat model, so budgets count the prompt
exactly) whose weights are on this machine, the prompt is tokenized exactly as
the worker will (chat template for messages, plain encoding for a string prompt, token ids as given)
and hashed into the engine's chained block hashes, so they match the keys of the workers' prefix
caches. Other models skip tokenization and estimate prompt tokens from the body size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from infercloud.config import ModelSpec
from infercloud.engine.kv.block_hash import hash_token_blocks
from infercloud.engine.tokenizer import Tokenizer
from infercloud.models.catalog import resolve_model
from infercloud.models.local import LocalModel
from infercloud.router.base import RouteRequest, RoutingPolicy, make_policy

_BYTES_PER_TOKEN = 4  # rough, for load estimates only


@dataclass(frozen=True)
class Plan:
    route: RouteRequest
    outstanding_tokens: int   # prompt + max new tokens: what this request adds to a replica's load


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
        ids = _prompt_ids(route.tokenizer, body) if route.tokenizer is not None else None
        num_prompt = len(ids) if ids is not None else raw_size // _BYTES_PER_TOKEN
        if ids is not None and route.spec.routing == "prefix_aware":
            hashes = hash_token_blocks(ids, route.block_size, cache_salt)
        max_new = body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens
        n = body.get("n") if isinstance(body.get("n"), int) else 1
        session = session_header or (body.get("user") if isinstance(body.get("user"), str) else None)
        request = RouteRequest(model, tuple(hashes), num_prompt, session_key=session or None, tenant=tenant,
                               priority=priority, region=region, allowed_regions=allowed_regions)
        extra = max_new * max(n, 1) if isinstance(max_new, int) else self.default_max_tokens
        return Plan(request, num_prompt + extra)


def _load_tokenizer(spec: ModelSpec) -> Tokenizer | None:
    try:
        return Tokenizer(LocalModel.open(resolve_model(spec.source)))
    except (LookupError, OSError, ValueError):
        return None  # weights not on this machine (an external-only model): route without hashes


def _prompt_ids(tokenizer: Tokenizer, body: dict) -> list[int] | None:
    """The prompt's token ids as the worker will compute them; None when the body is not well formed."""
    try:
        if "messages" in body:
            messages = [{"role": "system" if m["role"] == "developer" else m["role"], "content": _text(m)}
                        for m in body["messages"]]
            return tokenizer.encode_chat(messages)
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return prompt
    except (KeyError, TypeError, ValueError):
        pass
    return None


def _text(message: dict) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content)
