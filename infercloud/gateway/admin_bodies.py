"""Request bodies of the admin API as strict pydantic models: a wrong type or an unknown field is a 400.

Strict: "lots" is not an integer, 1 is not a boolean, a string is not a list of names. The models check
types only; ranges (limits that fit SQL INTEGER columns, finite budgets, name lengths, key lifetimes)
are TenantSpec.check's and the store's, the same rules for the config file, the CLI and this API.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from infercloud.config import TenantSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TenantBody(_Strict):
    """POST /admin/tenants: a TenantSpec's fields (None: no limit), with its defaults."""

    name: str
    tier: str = TenantSpec.tier
    models: list[str] | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    max_tokens_per_request: int | None = None
    budget_usd: float | None = None
    budget_period: str = TenantSpec.budget_period
    cache_group: str | None = None
    home_region: str | None = None
    regions: list[str] | None = None

    def spec(self) -> TenantSpec:
        values = self.model_dump()
        for name in ("models", "regions"):
            values[name] = tuple(values[name]) if values[name] is not None else None
        return TenantSpec(**values)


class KeyBody(_Strict):
    """POST /admin/keys: a key for `tenant`, admin or not, expiring after some days or never."""

    tenant: str
    name: str | None = None
    admin: bool = False
    expires_in_days: float | None = None


ADMIN_BODIES: dict[str, type[BaseModel]] = {"/admin/tenants": TenantBody, "/admin/keys": KeyBody}  # path -> body
