"""Tenancy's errors as the OpenAI errors a client gets: the one place a refusal or a store error becomes HTTP.

  Unauthenticated -> 401 invalid_request_error     NotPermitted   -> 403 permission_error
  InvalidRequest  -> 400 invalid_request_error     RateLimited    -> 429 `requests`, Retry-After, x-ratelimit-*
  BudgetExceeded  -> 429 insufficient_quota        TenancyError   -> 400 naming its field; NotFound -> 404
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from infercloud.openai.errors import (APIError, bad_request, forbidden, insufficient_quota, rate_limited,
                                      unauthorized)
from infercloud.tenancy.errors import BudgetExceeded, NotPermitted, RateLimited, Refused, Unauthenticated
from infercloud.tenancy.store import NotFound, TenancyError

T = TypeVar("T")


def refusal_error(exc: Refused) -> APIError:
    """The HTTP error for a tenancy refusal: its status, type, code, param, message and headers."""
    if isinstance(exc, Unauthenticated):
        return unauthorized(exc.message, code=exc.code)
    if isinstance(exc, NotPermitted):
        return forbidden(exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, RateLimited):
        return rate_limited(exc.message, exc.retry_after_s, exc.code, exc.headers)
    if isinstance(exc, BudgetExceeded):
        return insufficient_quota(exc.message)
    return bad_request(exc.message, param=exc.param, code=exc.code)   # InvalidRequest


def refusals_as_http(call: Callable[..., T], *args) -> T:
    """`call(*args)`, with a tenancy refusal raised as its HTTP error."""
    try:
        return call(*args)
    except Refused as exc:
        raise refusal_error(exc) from exc


def tenancy_error(exc: TenancyError, param: str | None = None) -> APIError:
    """A 400 naming the field the store's error is about, else `param`; a 404 when nothing has that name."""
    if isinstance(exc, NotFound):
        return APIError(404, str(exc), param=exc.param or param, code="not_found")
    return bad_request(str(exc), param=exc.param or param)
