"""The API's one exception family, and its translation into OpenAI's error shape.

Every refusal answers `{"error": {"message", "type", "param", "code"}}` with OpenAI's status
codes, so the official SDK raises the error class a script expects (AuthenticationError for a
401, PermissionDeniedError for a 403, RateLimitError for a 429...). Messages are sentences for
people; they never hold the token, the connection's key or a traceback.
"""

from __future__ import annotations

import math
from typing import Any

from django.http import JsonResponse

from batches.openai_client import (
    AuthError,
    BadResponse,
    InvalidRequest,
    NotFound,
    OpenAIError,
    RateLimited,
    UpstreamUnavailable,
)
from batches.services import connections as connection_services

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """A request the API refuses, with the status and OpenAI-style fields to answer with.

    `audit`: whether the refusal goes into the audit trail (token, scope, connection and
    input refusals do; a 404 for an unknown id does not)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        audit: bool = True,
        retry_after: float | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.audit = audit
        self.retry_after = retry_after
        self.error_type = error_type or TYPES.get(status, "api_error")
        self.request_id = request_id

    def response(self) -> JsonResponse:
        return error_response(
            self.status,
            self.message,
            code=self.code,
            param=self.param,
            error_type=self.error_type,
            retry_after=self.retry_after,
            request_id=self.request_id,
        )


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    error_type: str | None = None,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> JsonResponse:
    body = {
        "error": {
            "message": message,
            "type": error_type or TYPES.get(status, "api_error"),
            "param": param,
            "code": code,
        }
    }
    response = JsonResponse(body, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(max(0, math.ceil(retry_after)))
    if request_id:
        # The upstream request id, for the connection's provider if the script's author asks.
        response["X-Upstream-Request-Id"] = request_id
    return response


def upstream_error(error: OpenAIError) -> ApiError:
    """What a script is told when the connection's upstream failed. Its own mistakes (a bad
    id, a rejected value) keep upstream's status, code and param; upstream trouble is a 502,
    since the script reached batchweb fine; a refused connection key is batchweb's problem
    (an admin's), never the script's 401."""
    translated = _translate(error)
    translated.request_id = error.request_id
    return translated


def _translate(error: OpenAIError) -> ApiError:
    said = str(error)  # the client's own sentence: never the key, never a traceback
    if isinstance(error, connection_services.ConnectionNotReady):
        return ApiError(
            502,
            f"{said} Ask an admin to check the connection's key.",
            code="connection_not_ready",
            error_type="api_error",
        )
    if isinstance(error, RateLimited):
        return ApiError(
            429,
            said,
            code=error.code or "rate_limit_exceeded",
            retry_after=error.retry_after,
            error_type="insufficient_quota" if error.quota_exhausted else "rate_limit_error",
        )
    if isinstance(error, NotFound):
        return ApiError(404, said, code=error.code or "not_found", param=error.param, audit=False)
    if isinstance(error, AuthError):
        return ApiError(
            502,
            f"The connection's upstream refused batchweb's key for it (HTTP {error.status}); "
            "ask an admin to check the connection.",
            code="upstream_auth_failed",
            error_type="api_error",
        )
    if isinstance(error, InvalidRequest):
        status = error.status if error.status in (400, 409, 422) else 400
        return ApiError(status, said, code=error.code, param=error.param)
    if isinstance(error, UpstreamUnavailable | BadResponse):
        code = "upstream_bad_response" if isinstance(error, BadResponse) else "upstream_unavailable"
        return ApiError(502, said, code=code, error_type="api_error")
    return ApiError(502, said, code="upstream_error", error_type="api_error")


def answer(payload: dict[str, Any], *, status: int = 200) -> JsonResponse:
    return JsonResponse(payload, status=status)
