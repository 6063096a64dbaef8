"""Tenancy's refusals and store errors as the HTTP errors a client gets: status, body and headers."""

from __future__ import annotations

import math

import pytest

from infercloud.gateway.errors import refusal_error, refusals_as_http, tenancy_error
from infercloud.openai.errors import APIError
from infercloud.tenancy.errors import (BudgetExceeded, InvalidRequest, NotPermitted, RateLimited, Refused,
                                       Unauthenticated)
from infercloud.tenancy.store import NotFound, TenancyError


def _wire(error: APIError) -> tuple[int, dict, dict]:
    return error.status, error.body()["error"], error.headers


def _body(message: str, type: str, param: str | None, code: str | None) -> dict:
    return {"message": message, "type": type, "param": param, "code": code}


@pytest.mark.parametrize("refusal, status, body", [
    (Unauthenticated("no key", code="missing_api_key"), 401,
     _body("no key", "invalid_request_error", None, "missing_api_key")),
    (Unauthenticated("bad key"), 401, _body("bad key", "invalid_request_error", None, "invalid_api_key")),
    (NotPermitted("not that model", "model_not_allowed", param="model"), 403,
     _body("not that model", "permission_error", "model", "model_not_allowed")),
    (InvalidRequest("bad tier", param="service_tier"), 400,
     _body("bad tier", "invalid_request_error", "service_tier", None)),
    (InvalidRequest("too many", "max_tokens_exceeds_limit", param="max_tokens"), 400,
     _body("too many", "invalid_request_error", "max_tokens", "max_tokens_exceeds_limit")),
    (BudgetExceeded("spent"), 429, _body("spent", "insufficient_quota", None, "insufficient_quota")),
])
def test_each_refusal_has_its_status_and_body(refusal, status, body):
    assert _wire(refusal_error(refusal)) == (status, body, {})


@pytest.mark.parametrize("retry_after_s, header", [(29.2, "30"), (0.1, "1"), (30.0, "30"), (math.inf, "60")])
def test_a_rate_limit_is_a_429_with_retry_after_and_its_counters(retry_after_s, header):
    counters = {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0"}
    refusal = RateLimited("slow down", retry_after_s, "concurrency_limit_exceeded", counters)
    assert _wire(refusal_error(refusal)) == (
        429, _body("slow down", "requests", None, "concurrency_limit_exceeded"), {**counters, "Retry-After": header})
    assert refusal_error(RateLimited("slow down", 1.0)).code == "rate_limit_exceeded"


def test_refusals_as_http_passes_results_and_raises_refusals_as_http_errors():
    assert refusals_as_http(lambda a, b: a + b, 1, 2) == 3

    def refuse(model: str) -> None:
        raise NotPermitted(f"not {model}", "model_not_allowed", param="model")

    with pytest.raises(APIError) as caught:
        refusals_as_http(refuse, "m")
    assert (caught.value.status, caught.value.code, caught.value.message) == (403, "model_not_allowed", "not m")
    assert isinstance(caught.value.__cause__, Refused)


def test_a_store_error_is_a_400_naming_its_field_and_not_found_a_404():
    assert _wire(tenancy_error(TenancyError("bad name", param="name"))) == (
        400, _body("bad name", "invalid_request_error", "name", None), {})
    assert _wire(tenancy_error(TenancyError("bad"), param="tenant")) == (
        400, _body("bad", "invalid_request_error", "tenant", None), {})
    assert _wire(tenancy_error(NotFound("no tenant 'x'"), param="tenant")) == (
        404, _body("no tenant 'x'", "invalid_request_error", "tenant", "not_found"), {})
