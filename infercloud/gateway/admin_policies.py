"""The policy rules' admin API (admin keys only; the rules themselves are infercloud/policy/):

  GET    /admin/policies            every rule: the config's (`source: config`) and those made here (`api`)
  POST   /admin/policies            make one: a PolicySpec's fields (see policy/spec.py); 201, enforced at once
                                    here and by other gateways within tenancy.auth_cache_s
  GET    /admin/policies/{name}     one rule
  DELETE /admin/policies/{name}     remove a rule made here (the config's are removed in the config)

A bad field is a 400 naming it; a rule naming a tenant that does not exist is a 400 (`tenants`); a name
taken is a 409. Each change is an audit row (who, what, before and after).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from infercloud.gateway.admin import admin_principal
from infercloud.openai.asgi import read_json_object
from infercloud.openai.errors import bad_request
from infercloud.policy.audit import admin_change
from infercloud.policy.book import not_found, parse_policy
from infercloud.policy.spec import EVERY_TENANT, PolicySpec


class PolicyBody(BaseModel):
    """POST /admin/policies (documentation for /openapi.json; the spec checks the body, see policy/spec.py)."""
    model_config = ConfigDict(extra="allow")

    name: str
    kind: str
    tenants: list[str]


POLICY_BODIES: dict[str, type[BaseModel]] = {"/admin/policies": PolicyBody}


def install_policy_routes(app: FastAPI, gateway) -> None:
    def book():
        if gateway.governance is None:   # admin_principal has already answered 404 without tenancy
            raise bad_request("Policies are not enabled on this gateway.")
        return gateway.governance.book

    def card(spec: PolicySpec, source: str) -> dict:
        return {"object": "policy", "source": source, **spec.describe()}

    @app.get("/admin/policies")
    async def list_policies(request: Request):
        await admin_principal(gateway, request)
        await book().refresh()
        return {"object": "list", "data": [card(s, source) for s, source in book().specs()]}

    @app.get("/admin/policies/{name}")
    async def show_policy(name: str, request: Request):
        await admin_principal(gateway, request)
        await book().refresh()
        found = [card(s, source) for s, source in book().specs() if s.name == name]
        if not found:
            raise not_found(name)
        return found[0]

    @app.post("/admin/policies")
    async def create_policy(request: Request):
        t, principal = await admin_principal(gateway, request)
        _, body = await read_json_object(request)
        spec = parse_policy(body)
        for name in set(spec.tenants) - {EVERY_TENANT}:
            if await asyncio.to_thread(t.store.find_tenant, name) is None:
                raise bad_request(f"Unknown tenant {name[:100]!r}.", param="tenants")
        await book().create(spec)
        t.audit.record([admin_change(principal, "create_policy", f"policy {spec.name} ({spec.kind})",
                                     after=spec.describe())])
        return JSONResponse(card(spec, "api"), status_code=201)

    @app.delete("/admin/policies/{name}")
    async def delete_policy(name: str, request: Request):
        t, principal = await admin_principal(gateway, request)
        spec = await book().delete(name)
        t.audit.record([admin_change(principal, "delete_policy", f"policy {spec.name} ({spec.kind})",
                                     before=spec.describe())])
        return {"id": name, "object": "policy.deleted", "deleted": True}
