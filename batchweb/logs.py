"""One line per log record, each carrying the id of the request it belongs to.

- `RequestIdMiddleware` (first in MIDDLEWARE) takes the request's `X-Request-ID` when it is
  well-formed (a proxy or load balancer set it), otherwise makes one, keeps it for the request's
  log records and the audit trail (`current_request_id()`), and sends it back in the response's
  `X-Request-ID`, so a person reporting a problem and the log lines find each other.
- `RequestIdFilter` puts it on every record as `request_id` ("-" outside a request).
- `TextFormatter` writes `key=value` pairs (logfmt), `JsonFormatter` one JSON object: time,
  level, logger, request id, message, and the traceback folded into the same line. Which one is
  `BATCHWEB_LOG_FORMAT` (settings.LOGGING).

Neither formatter prints a request's headers, cookies or body; messages pass through `redact()`,
which masks what looks like an API key, a bearer token or a session cookie in case one slipped
into a message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
# What a request id from outside may look like: the usual UUIDs, hex strings and proxy ids
# (nginx's $request_id, Heroku's, "Root=1-…" style). Anything else, or a longer one, is replaced,
# so a client cannot put spaces, quotes or line breaks into the log through it.
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/@-]{0,127}")
NO_REQUEST = "-"

_request_id: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST)


def current_request_id() -> str:
    """The id of the request being served in this thread, or "" outside a request."""
    value = _request_id.get()
    return "" if value == NO_REQUEST else value


def request_id_from(value: str | None) -> str:
    """The id to use for a request that sent `value` as its X-Request-ID."""
    if value and _WELL_FORMED.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request.headers.get(HEADER))
        request.request_id = request_id
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response[HEADER] = request_id
        return response


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record. Django logs a 4xx or 5xx answer after the middleware
    has returned; those records carry the request, whose id is used then."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        from_request = getattr(request, "request_id", None) if request is not None else None
        record.request_id = from_request or _request_id.get()
        return True


# API keys (sk-…, including sk-proj-…), webhook secrets, bearer tokens, session and CSRF cookies.
_SECRETS = re.compile(
    r"(?P<keep>\bsk-|\bwhsec_|\bBearer\s+|\b(?:sessionid|csrftoken)=|\bapi-key:\s*)"
    r"[A-Za-z0-9._~+/=-]{4,}",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: f"{m.group('keep')}[redacted]", text)


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, str]:
    at = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
    fields = {
        "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname,
        "logger": record.name,
        "request_id": getattr(record, "request_id", NO_REQUEST),
        "message": redact(record.getMessage()),
    }
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        fields["exception"] = redact(record.exc_text)
    if record.stack_info:
        fields["stack"] = formatter.formatStack(record.stack_info)
    return fields


class JsonFormatter(logging.Formatter):
    """`{"time": …, "level": …, "logger": …, "request_id": …, "message": …}`, one a line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), ensure_ascii=False)


# Printable ASCII but for space, quote, "=" and backslash: written as is; anything else quoted
# and escaped as in JSON, so control characters and line breaks never reach the log raw.
_BARE = re.compile(r"[!#-<>-\[\]-~]+")


def _logfmt(value: str) -> str:
    return value if _BARE.fullmatch(value) else json.dumps(value, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time=… level=INFO logger=… request_id=… message="…"`, one a line (logfmt): line breaks
    in a message or traceback are written as \\n."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt(v)}" for k, v in _fields(record, self).items())
