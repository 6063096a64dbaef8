"""The admin API under /admin (admin keys only) and each tenant's view of its own usage at /v1/usage.

  GET  /admin/tenants                 every tenant
  POST /admin/tenants                 create one: {"name": ..., "tier": ..., "requests_per_minute": ...}
  GET  /admin/tenants/{name}          one tenant, its keys and its spend this period
  GET  /admin/keys?tenant=T           keys (prefixes only; a key is shown once, when created)
  POST /admin/keys                    {"tenant": T, "name": ..., "admin": false, "expires_in_days": 30}
  POST /admin/keys/{prefix}/revoke    revoke: the key fails on its next request
  GET  /admin/usage?tenant=&since=&until=&by=model|day|tenant
  GET  /v1/usage?since=&until=&by=model|day   the caller's own tenant only

Bodies are strict (gateway/admin_bodies.py) and kept to the ranges of TenantSpec.check and the store:
a bad field is a 400 naming it (`param`), an unknown tenant or key a 404, never a 500. Every change is
in the audit log (policy/audit.py): the admin key that made it and the object before and after, never a
key's secret or hash; `/admin/audit` reads it (gateway/audit_routes.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from infercloud.config import SALT_PREFIX_CACHE_REMOVED, SpecFieldError
from infercloud.gateway.accounting import Tenancy
from infercloud.gateway.admin_bodies import KeyBody, TenantBody
from infercloud.gateway.errors import tenancy_error
from infercloud.metering.reports import (GROUPS, device_utilization, parse_time, period_start, spent_usd,
                                         usage_report)
from infercloud.openai.asgi import read_json_object
from infercloud.internal_token import shows_token
from infercloud.openai.errors import APIError, bad_request, forbidden, internal_token_required
from infercloud.openai.protocol import validation_error
from infercloud.policy.audit import admin_change
from infercloud.store.database import utcnow
from infercloud.tenancy.admission import Principal
from infercloud.tenancy.store import TenancyError, key_expiry


def tenancy_of(gateway) -> Tenancy:
    """The gateway's tenancy, or the 404 `tenancy_disabled` of a gateway without one."""
    if gateway.tenancy is None:
        raise APIError(404, "Tenancy is not configured on this gateway (no `tenancy` section).",
                       code="tenancy_disabled")
    return gateway.tenancy


async def admin_principal(gateway, request: Request) -> tuple[Tenancy, Principal]:
    """The tenancy and the caller, whose key must be an admin key (else its 401 or 403)."""
    t = tenancy_of(gateway)
    principal = await t.authenticate(request.headers.get("authorization"))
    if not principal.key.is_admin:
        raise forbidden("This endpoint needs an admin key.", code="admin_key_required")
    return t, principal


async def operator_principal(gateway, request: Request) -> Principal | None:
    """An operator: an admin key (its Principal) or, also without tenancy, the internal token (None)."""
    authorization = request.headers.get("authorization")
    token = gateway.config.internal_token
    if token is not None and shows_token(authorization, token):
        return None
    if gateway.tenancy is None:
        raise internal_token_required()
    return (await admin_principal(gateway, request))[1]


def install_admin_routes(app: FastAPI, gateway) -> None:
    async def admin(request: Request) -> Tenancy:
        return (await admin_principal(gateway, request))[0]

    async def run(fn, *args, param: str | None = None):
        """`fn(*args)` in a thread; a TenancyError becomes a 400 or 404 naming its field, else `param`."""
        try:
            return await asyncio.to_thread(fn, *args)
        except TenancyError as exc:
            raise tenancy_error(exc, param) from exc

    @app.get("/admin/tenants")
    async def list_tenants(request: Request):
        t = await admin(request)
        return {"object": "list", "data": [x.describe() for x in await run(t.store.list_tenants)]}

    @app.post("/admin/tenants")
    async def create_tenant(request: Request):
        t, who = await admin_principal(gateway, request)
        _, body = await read_json_object(request)
        if "salt_prefix_cache" in body:
            raise bad_request(f"{SALT_PREFIX_CACHE_REMOVED}.", param="salt_prefix_cache")
        spec = _parse(TenantBody, body).spec()
        try:
            spec.check()
        except SpecFieldError as exc:
            raise bad_request(f"Invalid value for '{exc.field}': {exc.rule}.", param=exc.field) from exc
        unknown_models = sorted(set(spec.models or ()) - set(t.models))
        if unknown_models:
            raise bad_request(f"Unknown model {unknown_models[0]!r}.", param="models")
        declared = {r.name for r in gateway.config.regions}
        named = set(spec.regions or ()) | ({spec.home_region} - {None})
        unknown_regions = sorted(named - declared) if declared else []
        if unknown_regions:
            raise bad_request(f"Unknown region {unknown_regions[0]!r} (known: {', '.join(sorted(declared))}).",
                              param="regions")
        tenant = await run(t.store.create_tenant, spec, param="name")
        t.audit.record([admin_change(who, "create_tenant", f"create tenant {tenant.name} (tier {spec.tier})",
                                     tenant_id=tenant.id, after=tenant.describe())])
        return JSONResponse(tenant.describe(), status_code=201)

    @app.get("/admin/tenants/{name}")
    async def show_tenant(name: str, request: Request):
        t = await admin(request)
        tenant = await run(t.store.tenant, name, param="name")
        keys = await run(t.store.list_keys, tenant.id)
        await t.ledger.flush()
        since = period_start(tenant.spec.budget_period, utcnow())
        spent = await run(spent_usd, t.engine, tenant.id, since)
        return {**tenant.describe(), "keys": [k.describe() for k in keys],
                "spent_usd_this_period": spent, "in_flight": await t.admission.limiter.in_flight(tenant.id)}

    @app.get("/admin/keys")
    async def list_keys(request: Request):
        t = await admin(request)
        tenant = request.query_params.get("tenant")
        return {"object": "list", "data": [k.describe() for k in await run(t.store.list_keys, tenant,
                                                                             param="tenant")]}

    @app.post("/admin/keys")
    async def create_key(request: Request):
        t, who = await admin_principal(gateway, request)
        _, data = await read_json_object(request)
        body = _parse(KeyBody, data)
        try:
            expires = key_expiry(body.expires_in_days, utcnow())
        except TenancyError as exc:
            raise tenancy_error(exc) from exc
        key, record = await run(t.store.create_key, body.tenant, body.name, body.admin, expires, param="tenant")
        t.audit.record([admin_change(who, "create_key", f"create {record.label()} for tenant {body.tenant}",
                                     tenant_id=record.tenant_id, after=record.describe())])
        return JSONResponse({**record.describe(), "key": key}, status_code=201)

    @app.post("/admin/keys/{prefix}/revoke")
    async def revoke_key(prefix: str, request: Request):
        t, who = await admin_principal(gateway, request)
        before = await run(t.store.find_key, prefix, param="prefix")
        record = await run(t.store.revoke_key, prefix, param="prefix")
        t.auth.forget(key_id=record.id)
        t.audit.record([admin_change(who, "revoke_key", f"revoke {record.label()}", tenant_id=record.tenant_id,
                                     before=before.describe() if before is not None else None,
                                     after=record.describe())])
        return record.describe()

    @app.get("/admin/usage")
    async def admin_usage(request: Request):
        t = await admin(request)
        tenant = request.query_params.get("tenant")
        tenant_id = (await run(t.store.tenant, tenant, param="tenant")).id if tenant else None
        return await _report(t, gateway, request, tenant_id)

    @app.get("/v1/usage")
    async def own_usage(request: Request):
        t = tenancy_of(gateway)
        principal: Principal = await t.authenticate(request.headers.get("authorization"))
        asked = request.query_params.get("tenant")
        if asked and asked != principal.tenant.name:
            raise forbidden(f"A key of tenant {principal.tenant.name!r} may read only its own usage.",
                            param="tenant", code="not_your_tenant")
        return await _report(t, gateway, request, principal.tenant.id)


async def _report(t: Tenancy, gateway, request: Request, tenant_id: int | None) -> dict:
    q = request.query_params
    by = q.get("by", "model")
    if by not in GROUPS:
        raise bad_request(f"by must be one of {', '.join(GROUPS)}.", param="by")
    since, until = time_param(q, "since"), time_param(q, "until")
    await t.ledger.flush()
    rows = await asyncio.to_thread(usage_report, t.engine, by, tenant_id, since, until)
    report = {"object": "list", "by": by, "since": q.get("since"), "until": q.get("until"), "data": rows}
    if by == "model" and tenant_id is None:  # the operator's view: how busy each model's devices were
        started = dt.datetime.fromtimestamp(gateway.started_at, dt.timezone.utc).replace(tzinfo=None)
        busy = await asyncio.to_thread(device_utilization, t.engine, started, gateway.fleet.replica_seconds())
        report["device_utilization_since_start"] = busy
        for row in rows:
            row["device_utilization"] = busy.get(row["model"])
    return report


def _parse(model: type[BaseModel], data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def time_param(query, name: str) -> dt.datetime | None:
    """A `since`/`until` query parameter as a naive UTC datetime; a 400 naming it when it is no time."""
    try:
        return parse_time(query.get(name))
    except (ValueError, OverflowError) as exc:  # OverflowError: so many days ago that no date is
        raise bad_request(f"{name}: not a date or time (use 2026-11-01, 2026-11-01T12:00 or 7d).",
                          param=name) from exc
