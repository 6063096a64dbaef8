"""TenantStore: tenants and their API keys in SQL; a key is shown once, stored as a sha256 hash.

A key reads `sk-ic-<prefix><secret>`: 8 lowercase letters or digits of prefix (unique, shown in
listings, used to find the row) and 40 letters or digits of secret (238 bits), so a plain sha256 is
a sound hash for it: there is nothing to guess a password from. Verification compares hashes in
constant time and refuses revoked and expired keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

import sqlalchemy as sa

from infercloud.config import MAX_NAME_CHARS, SQL_INT_MAX, SpecFieldError, TenantSpec, short_repr
from infercloud.store.database import utcnow
from infercloud.store.schema import api_keys, tenants

KEY_PREFIX = "sk-ic-"
_PREFIX_LEN, _SECRET_LEN = 8, 40
_LOWER = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits
MAX_KEY_NAME = 100          # characters of a key's label
MAX_KEY_DAYS = 36500        # a key's lifetime in days, at most (a hundred years)


class TenancyError(ValueError):
    """A tenant or key operation that cannot be done (duplicate, bad value); `param` names the bad field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class NotFound(TenancyError):
    """No tenant or key by that name, prefix or id."""


@dataclass(frozen=True)
class Tenant:
    id: int
    spec: TenantSpec
    created_at: dt.datetime

    @property
    def name(self) -> str:
        return self.spec.name

    def may_use(self, model: str) -> bool:
        return self.spec.models is None or model in self.spec.models

    def describe(self) -> dict:
        return {"id": self.id, "created_at": self.created_at.isoformat() + "Z",
                **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.spec).items()}}


@dataclass(frozen=True)
class ApiKey:
    id: int
    tenant_id: int
    prefix: str
    name: str | None
    is_admin: bool
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def is_valid(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def label(self) -> str:
        """The key as the audit log names it: by its prefix (never its secret), admin or not."""
        return f"{'admin ' if self.is_admin else ''}key {KEY_PREFIX}{self.prefix}"

    def describe(self) -> dict:
        def iso(t: dt.datetime | None) -> str | None:
            return t.isoformat() + "Z" if t is not None else None
        return {"id": self.id, "tenant_id": self.tenant_id, "prefix": KEY_PREFIX + self.prefix, "name": self.name,
                "admin": self.is_admin, "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "revoked_at": iso(self.revoked_at)}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_SPEC_FIELDS = [f.name for f in dataclasses.fields(TenantSpec)]


class TenantStore:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    # -- tenants -----------------------------------------------------------------------------------
    def upsert_tenant(self, spec: TenantSpec) -> Tenant:
        """Create the tenant, or set an existing one's limits to `spec` (config-declared tenants)."""
        _check_spec(spec)
        values = _spec_row(spec)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(tenants.c.id).where(tenants.c.name == spec.name)).first()
            if row is None:
                conn.execute(tenants.insert().values(**values, created_at=utcnow()))
            else:
                conn.execute(tenants.update().where(tenants.c.id == row.id).values(**values))
        return self.tenant(spec.name)

    def create_tenant(self, spec: TenantSpec) -> Tenant:
        if self.find_tenant(spec.name) is not None:
            raise TenancyError(f"tenant {spec.name!r} already exists")
        return self.upsert_tenant(spec)

    def find_tenant(self, name_or_id: str | int) -> Tenant | None:
        if not _may_exist(name_or_id, MAX_NAME_CHARS):
            return None
        column = tenants.c.id if isinstance(name_or_id, int) else tenants.c.name
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tenants).where(column == name_or_id)).first()
        return _tenant(row) if row is not None else None

    def tenant(self, name_or_id: str | int) -> Tenant:
        found = self.find_tenant(name_or_id)
        if found is None:
            raise NotFound(f"no tenant {short_repr(name_or_id)}")
        return found

    def list_tenants(self) -> list[Tenant]:
        with self.engine.connect() as conn:
            return [_tenant(row) for row in conn.execute(sa.select(tenants).order_by(tenants.c.id))]

    # -- keys --------------------------------------------------------------------------------------
    def create_key(self, tenant: str | int, name: str | None = None, is_admin: bool = False,
                   expires_at: dt.datetime | None = None) -> tuple[str, ApiKey]:
        """A new key for the tenant: (the key itself, shown this once; its stored record)."""
        if name is not None and not (1 <= len(name) <= MAX_KEY_NAME and name.isprintable()):
            raise TenancyError(f"a key's name must be 1 to {MAX_KEY_NAME} printable characters", param="name")
        owner = self.tenant(tenant)
        prefix = "".join(secrets.choice(_LOWER) for _ in range(_PREFIX_LEN))
        key = KEY_PREFIX + prefix + "".join(secrets.choice(_ALNUM) for _ in range(_SECRET_LEN))
        with self.engine.begin() as conn:
            result = conn.execute(api_keys.insert().values(
                tenant_id=owner.id, prefix=prefix, key_hash=hash_key(key), name=name, is_admin=is_admin,
                created_at=utcnow(), expires_at=expires_at))
            key_id = result.inserted_primary_key[0]
        return key, self._key_by(api_keys.c.id == key_id)

    def list_keys(self, tenant: str | int | None = None) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant_id == self.tenant(tenant).id)
        with self.engine.connect() as conn:
            return [_key(row) for row in conn.execute(query)]

    def find_key(self, prefix_or_id: str | int) -> ApiKey | None:
        """The key with this prefix (with or without `sk-ic-`) or id, revoked or not; None if there is none."""
        return self._key_by(_key_condition(prefix_or_id))

    def revoke_key(self, prefix_or_id: str | int) -> ApiKey:
        condition = _key_condition(prefix_or_id)
        with self.engine.begin() as conn:
            done = conn.execute(api_keys.update().where(condition, api_keys.c.revoked_at.is_(None))
                                .values(revoked_at=utcnow()))
        key = self._key_by(condition)
        if key is None:
            raise NotFound(f"no API key {short_repr(prefix_or_id)}")
        if not done.rowcount and key.revoked_at is None:
            raise TenancyError(f"API key {short_repr(prefix_or_id)} could not be revoked")
        return key

    def verify(self, key: str, now: dt.datetime | None = None) -> tuple[Tenant, ApiKey] | None:
        """The tenant and key record for a presented key; None if unknown, wrong, revoked or expired."""
        if not key.startswith(KEY_PREFIX) or len(key) != len(KEY_PREFIX) + _PREFIX_LEN + _SECRET_LEN:
            return None
        prefix = key[len(KEY_PREFIX):len(KEY_PREFIX) + _PREFIX_LEN]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).first()
            if row is None or not hmac.compare_digest(row.key_hash, hash_key(key)):
                return None
            record = _key(row)
            if not record.is_valid(now or utcnow()):
                return None
            owner = conn.execute(sa.select(tenants).where(tenants.c.id == record.tenant_id)).one()
        return _tenant(owner), record

    def _key_by(self, condition) -> ApiKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(condition)).first()
        return _key(row) if row is not None else None


def _key_condition(prefix_or_id: str | int):
    """An int is a key id; a string is a key's prefix (with or without `sk-ic-`), or its id in digits
    when it cannot be a prefix (prefixes are exactly 8 characters)."""
    text = str(prefix_or_id).removeprefix(KEY_PREFIX)
    if isinstance(prefix_or_id, int) or (text.isascii() and text.isdigit() and len(text) != _PREFIX_LEN):
        key_id = int(text) if len(text) <= len(str(SQL_INT_MAX)) else 0   # more digits: no key's id
        return api_keys.c.id == key_id if _may_exist(key_id, 0) else sa.false()
    prefix = text[:_PREFIX_LEN]
    return api_keys.c.prefix == prefix if _may_exist(prefix, _PREFIX_LEN) else sa.false()


def key_expiry(days: float | None, now: dt.datetime) -> dt.datetime | None:
    """When a key made at `now` to live `days` days expires; None: never."""
    if days is None:
        return None
    if not 0 < days <= MAX_KEY_DAYS:
        raise TenancyError(f"expires_in_days must be more than 0 and at most {MAX_KEY_DAYS}, got {days}",
                           param="expires_in_days")
    return now + dt.timedelta(days=days)


def _may_exist(name_or_id: str | int, longest: int) -> bool:
    """Whether a tenant name (or key prefix) or id could be in the table: a longer name or one with a NUL
    (which PostgreSQL refuses in text), or an id beyond SQL INTEGER, is no row's, so is not looked up."""
    if isinstance(name_or_id, int):
        return 0 < name_or_id <= SQL_INT_MAX
    return len(name_or_id) <= longest and "\x00" not in name_or_id


def _check_spec(spec: TenantSpec) -> None:
    """TenantSpec.check's range rules, as the store's error (the admin API and the CLI make tenants here)."""
    try:
        spec.check()
    except SpecFieldError as exc:
        raise TenancyError(str(exc), param=exc.field) from exc


def _spec_row(spec: TenantSpec) -> dict:
    row = {name: getattr(spec, name) for name in _SPEC_FIELDS if name != "name"}
    row["name"] = spec.name
    row["salt_prefix_cache"] = True   # an older schema's NOT NULL column, no longer read: every tenant is salted
    row["models"] = list(spec.models) if spec.models is not None else None
    row["regions"] = list(spec.regions) if spec.regions is not None else None
    return row


def _tenant(row) -> Tenant:
    values = {name: getattr(row, name) for name in _SPEC_FIELDS}
    for name in ("models", "regions"):
        values[name] = tuple(values[name]) if values[name] is not None else None
    return Tenant(row.id, TenantSpec(**values), row.created_at)


def _key(row) -> ApiKey:
    return ApiKey(row.id, row.tenant_id, row.prefix, row.name, row.is_admin, row.created_at, row.expires_at,
                  row.revoked_at)
