"""Prefix-cache salts: each tenant's namespace is an HMAC of its id under a secret of the deployment.

Workers share a cached KV block between two requests only when their salts are equal (the salt is
chained into every block hash), and `usage.prompt_tokens_details.cached_tokens` tells a client, to the
token, how much of its prompt was found cached: two tenants on one salt learn each other's prompts. So
every tenant has a salt of its own by default, which nobody can compute without the secret (a hash of
the tenant id could be computed, and its block hashes with it), and tenants share only by config:

  tenant             HMAC-SHA256(secret, "tenant:<id>")
  cache group        HMAC-SHA256(secret, "group:<name>")          tenants sharing on purpose (config)
  client cache_salt  HMAC-SHA256(secret, "tenant:<id>:client:<salt>")   narrows, never crosses tenants

each cut to 32 hex characters (128 bits). The secret is 32 random bytes in the database's
`deployment_secrets` table, made by the first process that needs it: an insert-if-missing, so every
gateway sharing the database uses the same one, and two first starts racing end with the row that won.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

import sqlalchemy as sa

from infercloud.store.schema import deployment_secrets
from infercloud.tenancy.store import Tenant

CACHE_SALT_SECRET = "prefix_cache_salt"   # the row of deployment_secrets these salts are made with
SECRET_BYTES = 32
SALT_CHARS = 32


def deployment_secret(engine: sa.Engine, name: str) -> bytes:
    """The secret stored under `name`, made (random) and stored first if there is none yet."""
    found = _read_secret(engine, name)
    if found is None:
        try:
            with engine.begin() as conn:
                conn.execute(deployment_secrets.insert().values(name=name, value=secrets.token_hex(SECRET_BYTES)))
        except sa.exc.IntegrityError:
            pass  # another process stored one between our read and our insert: theirs is the secret
        found = _read_secret(engine, name)
    if found is None:
        raise RuntimeError(f"the deployment secret {name!r} could not be stored")
    return found


def _read_secret(engine: sa.Engine, name: str) -> bytes | None:
    with engine.connect() as conn:
        value = conn.execute(sa.select(deployment_secrets.c.value)
                             .where(deployment_secrets.c.name == name)).scalar_one_or_none()
    return bytes.fromhex(value) if value is not None else None


@dataclass(frozen=True)
class CacheSalts:
    """The salts requests are sent to workers with (and the gateway hashes prompts with, to route)."""

    secret: bytes = field(repr=False)

    @classmethod
    def of_database(cls, engine: sa.Engine) -> CacheSalts:
        return cls(deployment_secret(engine, CACHE_SALT_SECRET))

    def salt(self, tenant: Tenant, client_salt: object = None) -> str:
        """The tenant's salt (its cache group's, when it has one), or its client's salt within it."""
        if isinstance(client_salt, str) and client_salt:
            return self._hmac(f"tenant:{tenant.id}:client:{client_salt}")
        if tenant.spec.cache_group is not None:
            return self._hmac(f"group:{tenant.spec.cache_group}")
        return self._hmac(f"tenant:{tenant.id}")

    def _hmac(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()[:SALT_CHARS]
