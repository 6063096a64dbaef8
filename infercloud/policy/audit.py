"""AuditLog: every policy decision and every admin change, in SQL (the tenancy database), and queries over them.

A policy row: the rule, its mode, the action, the tenant, key and request id, and what matched (a kind of
data, a function and argument name: never the matched text, a key or an argument's value). An admin row: who
(the admin key), what (the object and the change) and the object before and after, secrets left out by the
caller. `query` filters by tenant (a tenant sees its own rows only), kind, time and rule, newest first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from infercloud.store.database import utcnow
from infercloud.store.schema import audit

MAX_WHAT = 300


@dataclass(frozen=True)
class AuditRow:
    kind: str                     # policy | admin
    action: str
    what: str
    tenant_id: int | None = None
    key_id: int | None = None
    request_id: str | None = None
    rule: str | None = None
    mode: str | None = None
    before: Any = None
    after: Any = None
    at: dt.datetime | None = None

    def values(self) -> dict:
        values = {k: getattr(self, k) for k in ("kind", "action", "tenant_id", "key_id", "request_id", "rule",
                                                "mode", "before", "after")}
        return {**values, "what": self.what[:MAX_WHAT], "at": self.at or utcnow()}


class AuditLog:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def write(self, rows: list[AuditRow]) -> None:
        """The rows in one transaction."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(audit.insert(), [row.values() for row in rows])

    def query(self, tenant_id: int | None = None, kind: str | None = None, rule: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None, limit: int = 100) -> list[AuditRow]:
        """Rows newest first; `tenant_id` given: that tenant's only."""
        q = sa.select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
        for column, value in (("tenant_id", tenant_id), ("kind", kind), ("rule", rule)):
            if value is not None:
                q = q.where(audit.c[column] == value)
        if since is not None:
            q = q.where(audit.c.at >= since)
        if until is not None:
            q = q.where(audit.c.at < until)
        with self.engine.connect() as conn:
            return [AuditRow(r.kind, r.action, r.what, r.tenant_id, r.key_id, r.request_id, r.rule, r.mode,
                             r.before, r.after, r.at) for r in conn.execute(q)]
