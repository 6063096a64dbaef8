"""PipelineRegistry: the pipelines a server offers: its config's, and those made through the admin API (SQL).

A name is looked up in the config first, then in the `pipelines` table; what the table says is trusted for
`cache_s` (so a chat request naming a model the server does not know costs one SQL query a second at most,
and a pipeline made on one gateway is seen by the others within that time). Admin-made pipelines are
checked like the config's (spec.resolve against the served models) and never shadow a model or a
configured pipeline; the config's cannot be deleted through the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import sqlalchemy as sa

from infercloud.config_loader import ConfigError, SpecFieldError, build
from infercloud.openai.errors import APIError, bad_request
from infercloud.pipelines.spec import PipelineSpec, resolve
from infercloud.store.database import utcnow
from infercloud.store.schema import pipelines as table


def not_found(name: str) -> APIError:
    return APIError(404, f"Pipeline '{name[:100]}' not found.", param="name", code="not_found")


class PipelineRegistry:
    def __init__(self, configured: tuple[PipelineSpec, ...], kinds: dict[str, str],
                 database: Callable[[], Awaitable[sa.Engine]], cache_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.configured = {p.name: p for p in configured}
        self.kinds = kinds                     # served model name -> chat | embedding
        self.database = database               # opened on first use
        self.cache_s = cache_s
        self.clock = clock
        self._made: dict[str, PipelineSpec] = {}
        self._read_at: float | None = None
        self._reading = asyncio.Lock()

    def parse(self, body: dict) -> PipelineSpec:
        """A posted pipeline as a spec with its models settled: a bad field is a 400 naming it."""
        try:
            return resolve(build(PipelineSpec, body, "pipeline"), self.kinds)
        except SpecFieldError as exc:
            raise bad_request(f"Invalid value for '{exc.field}': {exc.rule}.", param=exc.field) from None
        except ConfigError as exc:
            message = str(exc).removeprefix("pipeline.").removeprefix("pipeline: ")
            raise bad_request(f"Invalid pipeline: {message}.", param=message.split(":")[0]) from None

    async def _refresh(self, force: bool = False) -> dict[str, PipelineSpec]:
        async with self._reading:
            now = self.clock()
            if force or self._read_at is None or now - self._read_at >= self.cache_s:
                engine = await self.database()
                rows = await asyncio.to_thread(_read_all, engine)
                self._made = {}
                for name, spec in rows:
                    try:
                        self._made[name] = resolve(build(PipelineSpec, spec, "pipeline"), self.kinds)
                    except (ConfigError, SpecFieldError):   # a model it names is no longer served: unusable
                        continue
                self._read_at = now
            return self._made

    async def get(self, name: str) -> PipelineSpec | None:
        if name in self.configured:
            return self.configured[name]
        if name in self.kinds:
            return None
        return (await self._refresh()).get(name)

    async def all(self) -> list[PipelineSpec]:
        return [*self.configured.values(), *(await self._refresh()).values()]

    async def create(self, body: dict) -> PipelineSpec:
        spec = self.parse(body)
        if spec.name in self.configured or spec.name in await self._refresh(force=True):
            raise APIError(409, f"A pipeline named '{spec.name}' exists.", param="name", code="pipeline_exists")
        engine = await self.database()
        created = await asyncio.to_thread(_insert, engine, spec.name, body)
        if not created:
            raise APIError(409, f"A pipeline named '{spec.name}' exists.", param="name", code="pipeline_exists")
        self._made[spec.name] = spec
        return spec

    async def delete(self, name: str) -> None:
        if name in self.configured:
            raise APIError(409, f"Pipeline '{name}' is declared in the server's config; change the config to "
                           "remove it.", param="name", code="pipeline_in_config")
        engine = await self.database()
        if not await asyncio.to_thread(_delete, engine, name):
            raise not_found(name)
        self._made.pop(name, None)


def _read_all(engine: sa.Engine) -> list[tuple[str, dict]]:
    with engine.connect() as conn:
        return [(r.name, r.spec) for r in conn.execute(sa.select(table.c.name, table.c.spec))]


def _insert(engine: sa.Engine, name: str, spec: dict) -> bool:
    try:
        with engine.begin() as conn:
            conn.execute(table.insert().values(name=name, spec=spec, created_at=utcnow()))
        return True
    except sa.exc.IntegrityError:
        return False


def _delete(engine: sa.Engine, name: str) -> bool:
    with engine.begin() as conn:
        return conn.execute(table.delete().where(table.c.name == name)).rowcount > 0


def describe(spec: PipelineSpec) -> dict:
    """A pipeline as the API lists it."""
    return {"id": spec.name, "object": "pipeline", "slo_s": spec.slo_s, "deadline_ordering": spec.deadline_ordering,
            "description": spec.description,
            "stages": [{k: v for k, v in {
                "name": s.name, "kind": s.kind, "budget_s": s.budget_s, "on_budget": s.on_budget, "model": s.model,
                "collection": s.collection, "top_k": s.top_k if s.kind in ("retrieve", "rerank") else None,
                "method": s.method if s.kind == "rerank" else None, "rule": s.rule,
                "max_tokens": s.max_tokens if s.kind == "generate" else None}.items() if v is not None}
                for s in spec.stages]}
