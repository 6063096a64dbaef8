"""AuditLog: every policy decision and every admin change, in SQL (the tenancy database), and queries over them.

A policy row: the rule, its mode, the action, the tenant, key and request id, and what matched (a kind of
data, a function and argument name: never the matched text, a key or an argument's value). An admin row: who
(the admin key), what (the object and the change) and the object before and after, secrets left out
(`admin_change` drops any secret-named field). `query` filters by tenant (a tenant sees its own rows only),
kind, rule, request id and time, newest first.

`AuditWriter` is the request path's way in: `record` buffers rows at once (the caller never waits for SQL)
and a task writes the buffer every `flush_s` in one transaction, as the usage Ledger does. The buffer is
bounded: past `max_buffered` rows (a database down for long) the oldest are dropped and counted, with a
warning at most every 10 s. A batch the database cannot take stays buffered for the next flush;
a row it refuses on its own (a value it cannot store) is logged and dropped so it never blocks the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from infercloud.store.database import utcnow
from infercloud.store.group_commit import GroupCommit
from infercloud.store.schema import audit

if TYPE_CHECKING:
    from infercloud.tenancy.admission import Principal

log = logging.getLogger("infercloud.audit")

MAX_WHAT = 300
KINDS = ("policy", "admin")
MAX_QUERY_LIMIT = 1000          # rows one query returns at most (/admin/audit, /v1/audit, `infercloud audit`)
MAX_BUFFERED = 10_000           # rows an AuditWriter holds unwritten at most; past it the oldest are dropped
SECRET_FIELDS = frozenset({"key", "key_hash", "secret", "api_key", "token", "password"})


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
    id: int | None = None         # the table's, once written

    def values(self) -> dict:
        values = {k: getattr(self, k) for k in ("kind", "action", "tenant_id", "key_id", "request_id", "rule",
                                                "mode", "before", "after")}
        return {**values, "what": self.what[:MAX_WHAT], "at": self.at or utcnow()}

    def describe(self, tenant_name: str | None = None) -> dict:
        """The row as the API and `infercloud audit --json` show it (times ISO, UTC)."""
        return {"id": self.id, "object": "audit.entry", "at": self.at.isoformat() + "Z" if self.at else None,
                "kind": self.kind, "tenant": tenant_name, "tenant_id": self.tenant_id, "key_id": self.key_id,
                "request_id": self.request_id, "rule": self.rule, "mode": self.mode, "action": self.action,
                "what": self.what, "before": self.before, "after": self.after}


def admin_change(principal: Principal | None, action: str, what: str, tenant_id: int | None = None,
                 before: dict | None = None, after: dict | None = None) -> AuditRow:
    """An admin change's row: `principal` made it (None: not an API key, e.g. the CLI or the internal token),
    `action` says what kind (create_tenant, revoke_key, ...), `what` in a short line; `before`/`after` are the
    object's describe() dicts, any secret-named field (key, key_hash, token, ...) left out."""
    return AuditRow("admin", action, what, tenant_id=tenant_id,
                    key_id=principal.key.id if principal is not None else None,
                    before=_without_secrets(before), after=_without_secrets(after))


def _without_secrets(value: dict | None) -> dict | None:
    if value is None:
        return None
    return {k: v for k, v in value.items() if k not in SECRET_FIELDS}


class AuditLog:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def write(self, rows: list[AuditRow]) -> None:
        """The rows in one transaction."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(audit.insert(), [row.values() for row in rows])

    def query(self, tenant_id: int | None = None, kind: str | None = None, rule: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None, limit: int = 100,
              request_id: str | None = None) -> list[AuditRow]:
        """Rows newest first; `tenant_id` given: that tenant's only."""
        q = sa.select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
        for column, value in (("tenant_id", tenant_id), ("kind", kind), ("rule", rule), ("request_id", request_id)):
            if value is not None:
                q = q.where(audit.c[column] == value)
        if since is not None:
            q = q.where(audit.c.at >= since)
        if until is not None:
            q = q.where(audit.c.at < until)
        with self.engine.connect() as conn:
            return [AuditRow(r.kind, r.action, r.what, r.tenant_id, r.key_id, r.request_id, r.rule, r.mode,
                             r.before, r.after, r.at, r.id) for r in conn.execute(q)]


class AuditWriter:
    """Rows recorded on the request path, written to an AuditLog in batches off the event loop
    (store/group_commit.py)."""

    def __init__(self, audit_log: AuditLog, flush_s: float = 0.05, max_buffered: int = MAX_BUFFERED,
                 clock: Callable[[], float] = time.monotonic):
        self.audit_log = audit_log
        self.rows = GroupCommit("audit", self._insert, _is_refused, AuditRow.values, flush_s, max_buffered, clock)

    @property
    def num_buffered(self) -> int:
        return len(self.rows)

    @property
    def num_written(self) -> int:
        return self.rows.num_written

    @property
    def num_dropped(self) -> int:
        return self.rows.num_dropped

    def record(self, rows: list[AuditRow]) -> None:
        """Buffer the rows for the next flush (never waits; the oldest go when the buffer is full)."""
        self.rows.add(rows)

    def _insert(self, rows: list[AuditRow]) -> int:
        self.audit_log.write(rows)
        return len(rows)

    def start(self) -> None:
        """Write the buffer every `flush_s` from now on (call in the event loop)."""
        self.rows.start()

    async def flush(self) -> bool:
        """Write every buffered row now; False if some could not be written (they stay buffered)."""
        return await self.rows.flush()

    async def close(self) -> None:
        """Stop the writer after its current flush and write the rest; rows that still cannot be written
        are logged whole, for the operator."""
        await self.rows.stop()
        if not await self.flush():
            rows = self.rows.take()
            log.error("audit: %d rows could not be written at shutdown: %s", len(rows),
                      json.dumps([row.values() for row in rows], default=str))


def _is_refused(exc: Exception) -> bool:
    """The database (or the driver, encoding a value) refused the data itself, as opposed to being
    unreachable, locked or missing its table: only such a row is set aside, every other failure is tried
    again."""
    if isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return False
    return isinstance(exc, (sa.exc.StatementError, TypeError, ValueError))
