"""The internal plane's credential: one token per deployment, where a server finds it, how a caller shows it.

Everything but the public API needs this token: `/internal/*` and `/metrics` on gateways and workers,
and every route but `/health` of a worker that serves a cloud (its API answers only the gateway).
A caller shows it as `Authorization: Bearer <token>`; servers compare it in constant time.

Where a server's token comes from, first found wins:
  1. `internal_token` in the config (for several gateways and Ray clusters that share one);
  2. the environment variable INFERCLOUD_INTERNAL_TOKEN (the same, without a secret in a file);
  3. the file `internal-token` under the infercloud home, made on first use (mode 0600), so the
     operator's own tools on this machine (`curl -H "Authorization: Bearer $(cat ...)"`, benchmarks,
     tests) can read it and nobody else can.
Workers get the token from the cluster backend that starts them: local subprocesses in their
environment, Ray actors as an argument; never on a command line, never in a config file on disk.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from infercloud.paths import infercloud_home

TOKEN_ENV = "INFERCLOUD_INTERNAL_TOKEN"
MIN_TOKEN_CHARS = 16


def token_path() -> Path:
    return infercloud_home() / "internal-token"


def resolve_token(configured: str | None = None) -> tuple[str, str]:
    """The deployment's token and where it came from (for the start-up line)."""
    if configured:
        return configured, "config internal_token"
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        if len(from_env) < MIN_TOKEN_CHARS:
            raise ValueError(f"{TOKEN_ENV} must have at least {MIN_TOKEN_CHARS} characters")
        return from_env, f"${TOKEN_ENV}"
    path = token_path()
    return _read_or_create(path), str(path)


def client_token() -> str | None:
    """The token for the operator's own tools: the environment's, else the home's file (None if neither)."""
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return from_env
    try:
        return token_path().read_text().strip() or None
    except OSError:
        return None


def bearer(token: str | None) -> dict[str, str]:
    """The header that shows `token` (none for None)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def shows_token(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` (constant time in the token's content)."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[len("Bearer "):].strip().encode(), token.encode())


def _read_or_create(path: Path) -> str:
    """The token in `path`; a new one put there (0600) when there is none. Two first starts at once
    agree: the new token is written whole to a file of its own, then linked into place, once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        token = secrets.token_urlsafe(32)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        try:
            os.link(scratch, path)
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    token = path.read_text().strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{path} holds no valid internal token: delete it and start again")
    return token
