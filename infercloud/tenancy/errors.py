"""Why tenancy refuses a request: one exception per kind of refusal, which the gateway answers over HTTP
(gateway/errors.py).

Each carries the message for the client, and the `code` and `param` that say what it is about.
"""

from __future__ import annotations


class Refused(Exception):
    """A request tenancy will not serve."""

    def __init__(self, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class Unauthenticated(Refused):
    """No API key, a malformed one, or one that is unknown, revoked or expired."""

    def __init__(self, message: str, code: str = "invalid_api_key"):
        super().__init__(message, code)


class InvalidRequest(Refused):
    """A value the request may not ask for: an unknown tier, max_tokens above the tenant's cap."""


class NotPermitted(Refused):
    """A model or tier the tenant may not use."""


class RateLimited(Refused):
    """A rate or concurrency limit has no room now: retry after `retry_after_s` seconds (inf: it never fits).
    `headers`: the tenant's x-ratelimit-* counters at the time, where admission adds them."""

    def __init__(self, message: str, retry_after_s: float, code: str = "rate_limit_exceeded",
                 headers: dict[str, str] | None = None):
        super().__init__(message, code)
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class BudgetExceeded(Refused):
    """The tenant's budget for the period is spent."""

    def __init__(self, message: str):
        super().__init__(message, "insufficient_quota")
