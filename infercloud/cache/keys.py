"""Cache keys: which requests may be cached, the exact key of a request, and the semantic key's two parts.

Algorithm. A request body is normalized, then hashed (sha256 of canonical JSON: sorted keys, no spaces,
integral floats written as ints, so `0.0` and `0` are one temperature):
  - dropped: the fields that cannot change the text of the answer (DELIVERY_FIELDS: how it is delivered,
    who asked, how it is scheduled), top-level fields set to null (null is "not given");
  - kept: everything else as sent, unknown fields too: every message, every sampling field, tools,
    response_format, seed, max_tokens; plus the path (chat or text completion), the model and the max
    new tokens the gateway settled (a tenant's cap stands in for none given).
The exact key adds the cache namespace (tenant or group), so another namespace never hits.
The semantic key splits a chat body in two: the text of its last message (which must be the user's) is
embedded; everything else (earlier messages, the last message's other fields, every field of the body)
is hashed into `context_hash`. A hit needs the same namespace, model and context hash and a similar
last user turn: a different history or different settings never hit.

Cacheable: a chat or text completion, one choice (n absent or 1) of one prompt, no logprobs, no token
ids, no resumed stream, and deterministic (temperature 0 or a seed) unless the config allows others.
`Cache-Control: no-cache` (or `no-store`) skips the lookup; `no-store` also keeps the answer out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
KEY_VERSION = 1              # raised when normalization changes: keys of the old rules never match

# Fields that cannot change the answer's text: stream framing, the caller's identity and labels, OpenAI's
# `store`, and the scheduling tier and priority (the gateway sets them from the tenant).
DELIVERY_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier", "priority"})
# Fields that make a reply we cannot replay as it was: per-token data, or a stream resumed mid-way.
UNREPLAYABLE_FIELDS = ("logprobs", "top_logprobs", "return_token_ids", "resume_token_ids")


def canonical_json(value: object) -> str:
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _canonical(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _digest(payload: dict) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def normalized(body: Mapping, model: str) -> dict:
    """The body as far as the answer depends on it: delivery fields and nulls out, the settled model in."""
    kept = {k: v for k, v in body.items() if k not in DELIVERY_FIELDS and v is not None}
    if kept.get("n") == 1:
        del kept["n"]
    kept["model"] = model
    return kept


def exact_key(namespace: str, model: str, body: Mapping, path: str = CHAT_PATH,
              max_new_tokens: int | None = None) -> str:
    """The exact cache key: sha256 hex of namespace, path, model, settled max new tokens and normalized body."""
    return _digest({"v": KEY_VERSION, "namespace": namespace, "path": path, "max_new_tokens": max_new_tokens,
                    "body": normalized(body, model)})


def is_deterministic(body: Mapping) -> bool:
    """Temperature 0, or a seed: the same request gives the same answer."""
    temperature, seed = body.get("temperature"), body.get("seed")
    is_greedy = isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature == 0
    return is_greedy or (isinstance(seed, int) and not isinstance(seed, bool))


def is_cacheable(body: Mapping, allow_nondeterministic: bool = False, path: str = CHAT_PATH) -> bool:
    """A chat or text completion with one choice of one prompt, replayable, deterministic unless allowed."""
    if path == CHAT_PATH:
        messages = body.get("messages")
        if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
            return False
    elif path == COMPLETIONS_PATH:
        if not _is_one_prompt(body.get("prompt")):
            return False
    else:
        return False
    if body.get("n") not in (None, 1) or any(body.get(name) not in (None, False) for name in UNREPLAYABLE_FIELDS):
        return False
    return allow_nondeterministic or is_deterministic(body)


def _is_one_prompt(prompt: object) -> bool:
    """A text, a list of token ids, or a batch of exactly one of either."""
    if isinstance(prompt, str):
        return True
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return True
    return isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)) \
        and _is_one_prompt(prompt[0])


def semantic_parts(body: Mapping, model: str, max_new_tokens: int | None = None,
                   path: str = CHAT_PATH) -> tuple[str, str] | None:
    """(context_hash, last user text) of a chat body whose last message is the user's, with text only;
    None for any other body."""
    if path != CHAT_PATH:
        return None
    messages = body.get("messages")
    if not (isinstance(messages, list) and messages and isinstance(messages[-1], dict)):
        return None
    last = messages[-1]
    text = message_text(last.get("content"))
    if last.get("role") != "user" or not text:
        return None
    context = normalized(body, model)
    context["messages"] = [*messages[:-1], {k: v for k, v in last.items() if k != "content"}]
    context_hash = _digest({"v": KEY_VERSION, "path": path, "max_new_tokens": max_new_tokens, "body": context})
    return context_hash, text


def message_text(content: object) -> str | None:
    """A message's text: its content string, or its text parts joined by newlines (None with any other part)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return None
    return "\n".join(p["text"] for p in content)


def _directives(headers: Mapping[str, str]) -> set[str]:
    """Cache-Control directives, lower case, without arguments (header names matched in any case)."""
    values = [v for k, v in headers.items() if k.lower() == "cache-control"]
    return {d.split("=", 1)[0].strip().lower() for v in values for d in v.split(",") if d.strip()}


def wants_cache(headers: Mapping[str, str]) -> bool:
    """Whether a cached reply may answer: not when `Cache-Control` says `no-cache` or `no-store`."""
    return not ({"no-cache", "no-store"} & _directives(headers))


def may_store(headers: Mapping[str, str]) -> bool:
    """Whether the answer may be stored: not when `Cache-Control` says `no-store`."""
    return "no-store" not in _directives(headers)
