"""The audit log over HTTP: every row for admin keys, a tenant's own policy decisions for its keys.

  GET /admin/audit?tenant=&kind=policy|admin&rule=&request_id=&since=&until=&limit=   (admin keys)
  GET /v1/audit?rule=&request_id=&since=&until=&limit=     the caller's own tenant's policy decisions only

Rows come newest first as `{"object": "list", "data": [...]}`, times ISO (UTC), tenants by name. Each read
first flushes the gateway's audit buffer (Tenancy.audit), so it sees every row recorded before it. `limit` is
1 to MAX_QUERY_LIMIT (default 100); a bad or unknown parameter is a 400 naming it, an unknown tenant a 404.
A tenant never sees another tenant's rows (`tenant=` naming another is a 403 `not_your_tenant`, as on
/v1/usage) nor admin changes, which name admin keys and objects before and after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from fastapi import FastAPI, Request

from infercloud.gateway.accounting import Tenancy
from infercloud.gateway.admin import admin_principal, tenancy_of, time_param
from infercloud.gateway.errors import tenancy_error
from infercloud.openai.asgi import MAX_REQUEST_ID, no_query
from infercloud.openai.errors import bad_request, forbidden
from infercloud.policy.audit import KINDS, MAX_QUERY_LIMIT, AuditRow
from infercloud.store.schema import audit
from infercloud.tenancy.store import TenancyError

DEFAULT_LIMIT = 100
PARAMS = ("tenant", "kind", "rule", "request_id", "since", "until", "limit")
_LONGEST = {"rule": audit.c.rule.type.length, "request_id": MAX_REQUEST_ID}


@dataclass(frozen=True)
class AuditQuery:
    """An audit read's filters, checked."""

    tenant: str | None
    kind: str | None
    rule: str | None
    request_id: str | None
    since: dt.datetime | None
    until: dt.datetime | None
    limit: int


def parse_query(request: Request) -> AuditQuery:
    """The filters of /admin/audit and /v1/audit; a 400 naming the first bad one."""
    no_query(request, PARAMS)
    query = request.query_params
    kind = query.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise bad_request(f"Invalid value for 'kind': use {' or '.join(KINDS)}.", param="kind")
    texts = {name: _text(query, name) for name in ("rule", "request_id")}
    raw_limit = query.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 6
            and 1 <= int(raw_limit) <= MAX_QUERY_LIMIT):
        raise bad_request(f"Invalid value for 'limit': use an integer from 1 to {MAX_QUERY_LIMIT}.", param="limit")
    return AuditQuery(query.get("tenant") or None, kind, texts["rule"], texts["request_id"],
                      time_param(query, "since"), time_param(query, "until"), int(raw_limit))


def _text(query, name: str) -> str | None:
    """A rule name or request id: at most as long as the column holds, with no NUL (PostgreSQL refuses it)."""
    value = query.get(name) or None
    if value is not None and (len(value) > _LONGEST[name] or "\x00" in value):
        raise bad_request(f"Invalid value for '{name}': at most {_LONGEST[name]} characters, no NUL.", param=name)
    return value


def install_audit_routes(app: FastAPI, gateway) -> None:
    @app.get("/admin/audit")
    async def admin_audit(request: Request):
        t, _ = await admin_principal(gateway, request)
        q = parse_query(request)
        tenant_id = None
        if q.tenant is not None:
            tenant_id = (await _run(t.store.tenant, q.tenant, param="tenant")).id
        names = {tenant.id: tenant.name for tenant in await _run(t.store.list_tenants)}
        return await _read(t, q, tenant_id, names)

    @app.get("/v1/audit")
    async def own_audit(request: Request):
        t = tenancy_of(gateway)
        principal = await t.authenticate(request.headers.get("authorization"))
        q = parse_query(request)
        if q.tenant is not None and q.tenant != principal.tenant.name:
            raise forbidden(f"A key of tenant {principal.tenant.name!r} may read only its own audit log.",
                            param="tenant", code="not_your_tenant")
        if q.kind not in (None, "policy"):
            raise forbidden("A tenant's audit log holds its policy decisions only; admin changes are for admin "
                            "keys (/admin/audit).", param="kind", code="admin_key_required")
        q = AuditQuery(principal.tenant.name, "policy", q.rule, q.request_id, q.since, q.until, q.limit)
        return await _read(t, q, principal.tenant.id, {principal.tenant.id: principal.tenant.name})


async def _read(t: Tenancy, q: AuditQuery, tenant_id: int | None, names: dict[int, str]) -> dict:
    await t.audit.flush()   # every row recorded before this read is in the table
    rows: list[AuditRow] = await asyncio.to_thread(t.audit.audit_log.query, tenant_id, q.kind, q.rule, q.since,
                                                   q.until, q.limit, q.request_id)
    return {"object": "list", "data": [row.describe(names.get(row.tenant_id)) for row in rows]}


async def _run(fn, *args, param: str | None = None):
    try:
        return await asyncio.to_thread(fn, *args)
    except TenancyError as exc:
        raise tenancy_error(exc, param) from exc
