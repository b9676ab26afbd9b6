"""OpenAI-shaped errors, raised anywhere in the simulator and turned into HTTP once, at the edge."""

from __future__ import annotations

from typing import Any

AZURE_CODES = {400: "BadRequest", 409: "Conflict", 500: "InternalServerError"}


class ApiError(Exception):
    """An answer the OpenAI API would give as ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # the field's name on the wire
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self, *, message_only: bool = False, azure: bool = False) -> dict[str, Any]:
        """The JSON body; ``message_only`` mimics compatible servers that send nothing else,
        ``azure`` Azure OpenAI's ``{"error": {code, message}}`` (plus ``param`` when known)."""
        if message_only:
            return {"error": {"message": self.message}}
        if azure:
            # Azure always sends a code: a name, or else its gateway's HTTP status as a string.
            inner = {"code": self.code or AZURE_CODES.get(self.status, str(self.status))}
            inner["message"] = self.message
            if self.param is not None:
                inner["param"] = self.param
            return {"error": inner}
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, *, param: str | None = None) -> ApiError:
    return ApiError(404, message, param=param)


def conflict(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(409, message, param=param, code=code)
