"""PolicyBook: the rules a gateway enforces: its config's (`policies:`) and those made through the admin API
(the `policies` table), and the RuleSet that applies to one tenant's key.

A rule applies to a request when it names the request's tenant (or "*") and, where it names keys, the
request's key (by name or sk-ic- prefix). The table is read at most once per `cache_s` (a rule made on one
gateway is enforced by the others within that time; on the gateway that made it, at once); the RuleSet of
each (tenant, key) is compiled once per read, so a request with rules costs a dict lookup to find them.
Admin-made rules are checked like the config's, never shadow a configured rule, and the config's cannot be
deleted through the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import sqlalchemy as sa

from infercloud.config_loader import SpecFieldError, build
from infercloud.openai.errors import APIError, bad_request
from infercloud.policy.conversation import ConversationRule
from infercloud.policy.guards import GuardRule
from infercloud.policy.rules import RuleSet
from infercloud.policy.spec import PolicySpec, compile_rule
from infercloud.policy.tools import ToolRule
from infercloud.store.database import utcnow
from infercloud.store.schema import policies as table
from infercloud.tenancy.admission import Principal
from infercloud.tenancy.store import KEY_PREFIX


def not_found(name: str) -> APIError:
    return APIError(404, f"Policy '{name[:100]}' not found.", param="name", code="not_found")


def parse_policy(body: dict) -> PolicySpec:
    """A posted rule as a checked spec: a bad field is a 400 naming it."""
    try:
        spec = build(PolicySpec, body, "policy")
        spec.check()
        return spec
    except SpecFieldError as exc:
        raise bad_request(f"Invalid value for '{exc.field}': {exc.rule}.", param=exc.field) from None
    except ValueError as exc:   # ConfigError: an unknown field or a value of the wrong type
        message = str(exc).removeprefix("policy.").removeprefix("policy: ")
        raise bad_request(f"Invalid policy: {message}.", param=message.split(":")[0]) from None


class PolicyBook:
    def __init__(self, configured: tuple[PolicySpec, ...], engine: sa.Engine, cache_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.configured = {p.name: p for p in configured}
        self.engine = engine
        self.cache_s = cache_s
        self.clock = clock
        self._made: dict[str, PolicySpec] = {}
        self._compiled: dict[str, ToolRule | GuardRule | ConversationRule] = \
            {p.name: compile_rule(p) for p in configured}
        self._sets: dict[tuple[int, int], RuleSet] = {}
        self._read_at: float | None = None
        self._reading = asyncio.Lock()

    def specs(self) -> list[tuple[PolicySpec, str]]:
        """Every rule with where it comes from (config | api), as of the last read."""
        return [(s, "config") for s in self.configured.values()] + [(s, "api") for s in self._made.values()]

    async def rules_for(self, principal: Principal) -> RuleSet:
        if self._stale():
            await self.refresh(force=False)
        key = (principal.tenant.id, principal.key.id)
        rules = self._sets.get(key)
        if rules is None:
            rules = self._sets[key] = self._compile(principal)
        return rules

    def _compile(self, principal: Principal) -> RuleSet:
        prefix = KEY_PREFIX + principal.key.prefix
        applying = [self._compiled[s.name] for s, _ in self.specs()
                    if s.applies_to(principal.tenant.name, principal.key.name, prefix)]
        return RuleSet(tuple(r for r in applying if isinstance(r, ToolRule)),
                       tuple(r for r in applying if isinstance(r, GuardRule)),
                       tuple(r for r in applying if isinstance(r, ConversationRule)))

    def _stale(self) -> bool:
        return self._read_at is None or self.clock() - self._read_at >= self.cache_s

    async def refresh(self, force: bool = True) -> None:
        async with self._reading:
            if not force and not self._stale():   # another request read it while this one waited
                return
            made = await asyncio.to_thread(self._read)
            self._compiled = {name: rule for name, rule in self._compiled.items() if name in self.configured}
            for name, spec in made.items():
                try:
                    self._compiled[name] = compile_rule(spec)
                except SpecFieldError:
                    made.pop(name)
            self._made, self._sets, self._read_at = made, {}, self.clock()

    def _read(self) -> dict[str, PolicySpec]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.name, table.c.spec)).all()
        made = {}
        for row in rows:
            if row.name not in self.configured:
                try:
                    made[row.name] = build(PolicySpec, row.spec, "policy")
                except ValueError:
                    continue   # a row this version cannot read is not enforced (and listed nowhere)
        return made

    async def create(self, spec: PolicySpec) -> None:
        if spec.name in self.configured:
            raise APIError(409, f"Policy '{spec.name}' is declared in the config.", param="name", code="conflict")

        def insert() -> bool:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(table.c.name).where(table.c.name == spec.name)).first() is not None:
                    return False
                conn.execute(table.insert().values(name=spec.name, spec=spec.describe(), created_at=utcnow()))
                return True

        if not await asyncio.to_thread(insert):
            raise APIError(409, f"Policy '{spec.name}' already exists.", param="name", code="conflict")
        await self.refresh()

    async def delete(self, name: str) -> PolicySpec:
        if name in self.configured:
            raise APIError(409, f"Policy '{name[:100]}' is declared in the config; remove it there.",
                           param="name", code="conflict")
        await self.refresh()
        spec = self._made.get(name)
        if spec is None:
            raise not_found(name)

        def remove() -> None:
            with self.engine.begin() as conn:
                conn.execute(table.delete().where(table.c.name == name))

        await asyncio.to_thread(remove)
        await self.refresh()
        return spec
