"""RequestFacts: an API request parsed once at the gateway. Planning, admission, the upstream bodies and
metering read it; none of them derives a fact from the body again.

`FactsParser.parse` settles, in this order (each refusal an OpenAI-style error, the first one wins):
  1. model: the body's (400 without one, 404 when not served here, 403 when the tenant may not use it);
  2. tier: the one asked for (`service_tier`, or OpenAI's aliases), up to the tenant's (403 above it), else
     the tenant's; without tenancy any tier. Its priority, in vLLM's convention (lower is served first),
     goes unchanged to the router, the worker and the engine's scheduler;
  3. region: the `x-infercloud-region` header, else the tenant's home region, else the gateway's own; a
     tenant bound to regions (data residency) may not name another (403 `region_not_allowed`) and without a
     header is served in its first region unless the default is one of its own; a region not in `regions`
     is a 400 `invalid_region`;
  4. max new tokens asked: `max_completion_tokens`, else `max_tokens`; above the tenant's cap a 400, none
     given and a cap: the cap, which the worker is then sent. How many tokens a request may generate when
     it asks for none is one rule for everyone (openai/protocol.max_new_tokens);
  5. session (the X-Session-Id header, else the body's `user`), cache salt (the tenant's secret one, or its
     client's within it), tenant.
The upstream bodies come from the facts (`upstream_for`): the client's body without the gateway's own
fields, and, for native workers, the tier, its priority, the salt, a pipeline stage's deadline and the usage
options metering needs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Container
from dataclasses import dataclass

from infercloud.config import ServerConfig, TenantSpec
from infercloud.gateway.errors import refusals_as_http
from infercloud.openai.errors import bad_request, forbidden, model_not_found
from infercloud.tenancy.admission import TIER_PRIORITY, Admission, Principal
from infercloud.tenancy.store import Tenant

OPEN_TENANT = Tenant(0, TenantSpec("open", tier="interactive"), dt.datetime(1970, 1, 1))  # no-auth mode: any tier
EMBEDDINGS = "/v1/embeddings"
_GATEWAY_FIELDS = ("service_tier", "priority", "cache_salt", "deadline_s")  # set by the gateway, never passed on


@dataclass(frozen=True)
class RequestFacts:
    model: str
    body: dict                                # the client's body as sent (never edited)
    path: str = "/v1/chat/completions"
    raw_size: int = 0                         # bytes: prompt tokens are estimated from it when not counted
    tier: str = "standard"
    max_new_tokens: int | None = None         # asked for, or the tenant's cap; None: neither
    region: str | None = None
    allowed_regions: frozenset[str] | None = None   # data residency: only these (None: any)
    session: str | None = None
    salt: str | None = None                   # what the worker hashes the prompt's blocks with
    tenant: str | None = None
    deadline_s: float | None = None           # a pipeline's generate stage: its first token is due this soon

    @classmethod
    def of(cls, body: dict, path: str = "/v1/chat/completions", raw_size: int = 0, **settled) -> "RequestFacts":
        """The facts a body states by itself (model, max new tokens, session from `user`), plus `settled`."""
        user = body.get("user") if isinstance(body.get("user"), str) else None
        facts = {"model": body.get("model"), "max_new_tokens": asked_max_tokens(body), "session": user or None}
        return cls(body=body, path=path, raw_size=raw_size, **{**facts, **settled})

    @property
    def priority(self) -> int:
        return TIER_PRIORITY[self.tier]

    @property
    def is_generation(self) -> bool:
        return self.path != EMBEDDINGS

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True and self.is_generation

    @property
    def n(self) -> int:
        n = self.body.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1

    @property
    def num_prompts(self) -> int:
        """A completion's batch (a list of strings or of token-id lists), else 1."""
        prompt = self.body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            return len(prompt)
        return 1

    @property
    def num_choices(self) -> int:
        """Choices it returns: n for each prompt (only a single one can migrate mid-stream)."""
        return self.n * self.num_prompts


def asked_max_tokens(body: dict) -> int | None:
    """The max new tokens a body asks for: max_completion_tokens, else max_tokens."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class FactsParser:
    def __init__(self, config: ServerConfig, models: Container[str], tenancy=None):
        self.config = config
        self.models = models                  # the model names served here
        self.tenancy = tenancy                # gateway/accounting.py Tenancy (salts), None without tenancy

    def parse(self, body: dict, path: str, raw_size: int, principal: Principal | None,
              region_header: str | None, session: str | None) -> RequestFacts:
        model = self.model(body, principal)
        tenant = principal.tenant if principal is not None else OPEN_TENANT
        tier = refusals_as_http(Admission.resolve_tier, tenant, body.get("service_tier"))
        region, allowed = self.region(principal, region_header)
        settled = {"model": model, "tier": tier, "region": region, "allowed_regions": allowed}
        if principal is not None:
            settled["tenant"] = principal.tenant.name
            settled["salt"] = self.tenancy.cache_salt(principal, body.get("cache_salt"))
            if path != EMBEDDINGS:
                settled["max_new_tokens"] = refusals_as_http(Admission.cap_max_tokens, tenant, asked_max_tokens(body))
        if session:
            settled["session"] = session
        return RequestFacts.of(body, path, raw_size, **settled)

    def model(self, body: dict, principal: Principal | None) -> str:
        """The body's model: a 400 when it names none, a 404 when it is not served, a 403 when the tenant may
        not use it."""
        model = body.get("model")
        if not isinstance(model, str):
            raise bad_request("Missing required field: 'model'.", param="model")
        if model not in self.models:
            raise model_not_found(model)
        if principal is not None:
            refusals_as_http(Admission.check_model, principal.tenant, model)
        return model

    def region(self, principal: Principal | None, header: str | None) -> tuple[str | None, frozenset[str] | None]:
        """The request's region and the regions it may be served in (None: any)."""
        tenant = principal.tenant.spec if principal is not None else None
        allowed = frozenset(tenant.regions) if tenant is not None and tenant.regions is not None else None
        declared = {r.name for r in self.config.regions}
        if header:
            if declared and header not in declared:
                raise bad_request(f"Unknown region {header!r} in x-infercloud-region (known: "
                                  f"{', '.join(sorted(declared))}).", code="invalid_region")
            if allowed is not None and header not in allowed:
                raise forbidden(f"Tenant {tenant.name!r} is bound to the regions {', '.join(sorted(allowed))} "
                                f"(data residency); its requests may not be served in {header!r}.",
                                code="region_not_allowed")
            return header, allowed
        region = (tenant.home_region if tenant is not None else None) or self.config.gateway.region
        if allowed is not None and region not in allowed:
            region = tenant.regions[0]
        return region, allowed


@dataclass
class Upstream:
    """What to send: the body for native workers and the one for external replicas, and the client's wishes."""

    native: dict
    external: dict
    client_usage: bool = False          # the client asked for stream_options.include_usage
    client_continuous: bool = False     # ... or for usage on every chunk

    def encode(self, replica, extra: dict | None = None) -> bytes:
        body = self.external if replica.is_external else self.native
        return json.dumps({**body, **extra} if extra else body).encode()


def upstream_for(facts: RequestFacts, metered: bool) -> Upstream:
    """The bodies for native and external replicas: the client's, with the tenant's max tokens cap where it
    applies; native generation also gets the tier, its priority, the salt and (metered streams) usage on
    every chunk."""
    client = {k: v for k, v in facts.body.items() if k not in _GATEWAY_FIELDS}
    if not facts.is_generation:
        return Upstream(client, client)
    if facts.max_new_tokens != asked_max_tokens(facts.body):   # the tenant's cap stands in for none given
        field = "max_completion_tokens" if facts.body.get("max_completion_tokens") is not None else "max_tokens"
        client[field] = facts.max_new_tokens
    options = facts.body.get("stream_options") if isinstance(facts.body.get("stream_options"), dict) else {}
    native = {**client, "priority": facts.priority, "service_tier": facts.tier}
    if facts.salt is not None:
        native["cache_salt"] = facts.salt
    if facts.deadline_s is not None:
        native["deadline_s"] = facts.deadline_s
    external = client
    if metered and facts.stream:
        native["stream_options"] = {**options, "include_usage": True, "continuous_usage_stats": True}
        external = {**client, "stream_options": {**options, "include_usage": True}}
    return Upstream(native, external, bool(options.get("include_usage")),
                    bool(options.get("continuous_usage_stats")))
