"""OpenAI-style errors: one exception type carrying status, type, param and code, rendered as JSON."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_from_answer(status: int, body: object, fallback: str) -> APIError:
    """The OpenAI error an answer of another endpoint carries (an in-process call's), as the same status, type,
    code, param and message; `fallback` when its body has no error object."""
    error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    return APIError(status, error.get("message") or fallback, type=error.get("type") or "invalid_request_error",
                    param=error.get("param"), code=error.get("code"))


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")


def overloaded(message: str, retry_after_s: int = 1) -> APIError:
    return APIError(503, message, type="overloaded_error", code="overloaded",
                    headers={"Retry-After": str(retry_after_s)})


def draining() -> APIError:
    return APIError(503, "The server is shutting down and accepts no new requests.",
                    type="overloaded_error", code="draining", headers={"Retry-After": "1"})


def too_large(limit: int) -> APIError:
    return APIError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")


def internal(message: str = "The server had an error while processing your request.") -> APIError:
    return APIError(500, message, type="internal_error", code="internal_error")


def unauthorized(message: str, code: str | None = "invalid_api_key") -> APIError:
    return APIError(401, message, type="invalid_request_error", code=code)


def internal_token_required() -> APIError:
    return unauthorized("This route is on the internal plane and needs the deployment's internal token "
                        "(Authorization: Bearer <token>; docs/security.md says where it is).",
                        code="internal_token_required")


def forbidden(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(403, message, type="permission_error", param=param, code=code)


def rate_limited(message: str, retry_after_s: float, code: str = "rate_limit_exceeded",
                 headers: dict[str, str] | None = None) -> APIError:
    seconds = max(1, int(-(-retry_after_s // 1))) if retry_after_s != float("inf") else 60
    return APIError(429, message, type="requests", code=code, headers={**(headers or {}), "Retry-After": str(seconds)})


def insufficient_quota(message: str) -> APIError:
    return APIError(429, message, type="insufficient_quota", code="insufficient_quota")
