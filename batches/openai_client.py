"""The one module that speaks HTTP to the OpenAI API (or any server that speaks its dialect).

It knows nothing of the database. Every call has connect and read timeouts; idempotent calls are
retried the way the official SDK does; every failure becomes one `OpenAIError` subclass whose
message a person can read. The API key is sent in a header and never appears in a log line or an
error message.

Three dialects share the code: OpenAI's (and compatible servers'), Azure OpenAI's v1 API, which
is OpenAI's at another base URL, and Azure's dated API (`/openai/...?api-version=`). Answers are
passed through `batches.payloads` so that callers see OpenAI's shape whichever server answered.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, BinaryIO
from urllib.parse import quote

import requests
from requests_toolbelt.multipart.encoder import MultipartEncoder

from batchweb import __version__

from .errors import Failure
from .payloads import normalize_batch, normalize_file, normalize_list

logger = logging.getLogger(__name__)

USER_AGENT = f"batchweb/{__version__} (+self-hosted Batch API dashboard)"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0  # seconds; a longer wait is not worth retrying (as the official SDK)
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0

DIALECTS: tuple[str, ...] = ("openai", "azure", "azure-legacy")
AUTH_STYLES: tuple[str, ...] = ("bearer", "api-key")
DEFAULT_API_VERSION = "2024-10-21"  # Azure's dated API: the GA version with batches and files
# Azure refuses a create at once with this when the deployment's queue of enqueued tokens is
# full (OpenAI accepts the create and fails the batch later with the same code).
TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"  # noqa: S105 (an error code, not a secret)
_TOKEN_LIMIT_WORDS = re.compile(r"token[\s_-]*limit[\s_-]*exceeded", re.IGNORECASE)

# The one pattern of an upstream id (a batch or file id: `batch_abc123`, `file-abc123`, Azure's
# `batch_<uuid>`, a gateway's `batch-...`): letters, digits, `_` and `-`, 1 to 128 characters
# (the length of the cache's id columns). No `/`, `.`, `%` or space, so an id can never be a
# path of its own (`.` and `..` would reach `{base}/files/` and `{base}/`). The URL converters
# (batches/converters.py) use it to 404 a page or /v1/ call before any view runs; the client
# refuses to build a URL from anything else, whichever caller the id came from.
UPSTREAM_ID_REGEX = r"[A-Za-z0-9_-]{1,128}"
_UPSTREAM_ID = re.compile(UPSTREAM_ID_REGEX)


def is_upstream_id(value: object) -> bool:
    """Whether `value` is text of the shape of an upstream id (see UPSTREAM_ID_REGEX)."""
    return isinstance(value, str) and _UPSTREAM_ID.fullmatch(value) is not None


class OpenAIError(Failure):
    """An upstream call failed. `str()` is a sentence fit to show a person."""

    title = "The OpenAI API call failed"

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.request_id = request_id
        self.code = code
        # The request parameter upstream blamed (OpenAI's `error.param`), when it named one.
        self.param = param
        self.retry_after = retry_after
        # True when the request may have taken effect upstream (timeout, 5xx): a create that
        # failed this way must be reconciled before it is tried again.
        self.ambiguous = False
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [self.title]
        if self.status:
            parts[0] += f" (HTTP {self.status})"
        if self.message:
            parts.append(self.message.strip())
        text = ": ".join(parts)
        if not text.endswith((".", "!", "?")):
            text += "."
        if self.request_id:
            text += f" Request id {self.request_id}."
        return text


class UpstreamUnavailable(OpenAIError):
    title = "The OpenAI API is not available right now"


class AuthError(OpenAIError):
    title = "The OpenAI API refused the credentials"


class RateLimited(OpenAIError):
    title = "The OpenAI API is rate limiting these requests"

    @property
    def quota_exhausted(self) -> bool:
        return self.code == "insufficient_quota"


class NotFound(OpenAIError):
    title = "The OpenAI API does not know this object"


class InvalidRequest(OpenAIError):
    title = "The OpenAI API rejected the request"


class BadResponse(OpenAIError):
    title = "The OpenAI API sent an answer batchweb cannot read"


class InvalidId(InvalidRequest):
    """batchweb refused to send an id that is not of an upstream id's shape: nothing was sent."""

    title = "batchweb did not send the request"


class NotABatch(BadResponse):
    """A readable answer about one batch that is not a Batch object (no id or status): that
    batch's trouble, not necessarily the whole connection's."""


@dataclass(frozen=True)
class ClientConfig:
    api_key: str
    base_url: str = "https://api.openai.com/v1"
    organization: str = ""
    project: str = ""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 2
    # The longest Retry-After worth waiting for; longer ones are raised at once.
    max_retry_wait: float = MAX_RETRY_AFTER
    # One of DIALECTS: how URLs and upload fields are spelt.
    dialect: str = "openai"
    # One of AUTH_STYLES: "bearer" sends `Authorization: Bearer <key>`, "api-key" an `api-key`
    # header (Azure's key style).
    auth_style: str = "bearer"
    # Sent as `?api-version=` on every call of the "azure-legacy" dialect; ignored otherwise.
    api_version: str = DEFAULT_API_VERSION

    def __post_init__(self) -> None:
        # A typo here would send requests to the wrong URL or without a key: fail at once.
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {self.dialect!r}")
        if self.auth_style not in AUTH_STYLES:
            raise ValueError(
                f"auth_style must be one of {', '.join(AUTH_STYLES)}, not {self.auth_style!r}"
            )

    def __repr__(self) -> str:  # never print the key, even in a debugger or a crash report
        return (
            f"ClientConfig(base_url={self.base_url!r}, dialect={self.dialect!r}, "
            f"auth_style={self.auth_style!r}, api_key=***)"
        )

    @property
    def is_azure(self) -> bool:
        return self.dialect in ("azure", "azure-legacy")

    def url(self, path: str) -> str:
        """The full URL of an API path such as `/batches`."""
        base = self.base_url.rstrip("/")
        if self.dialect != "azure-legacy":
            return base + path
        # The dated API hangs off the resource endpoint; people paste it with or without the
        # `/openai` segment, so accept both.
        base = base.removesuffix("/openai")
        return f"{base}/openai{path}"

    def query(self, params: dict[str, Any] | None) -> dict[str, Any] | None:
        """The query parameters of a call: the dated API wants its version on every one."""
        if self.dialect != "azure-legacy":
            return params
        return {**(params or {}), "api-version": self.api_version}


def retry_after_seconds(headers: Any) -> float | None:
    """Read `retry-after-ms` or `retry-after` (seconds or an HTTP date), as the SDK does."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # junk: fall back to the backoff rather than crash
        return None
    return max(0.0, parsed.timestamp() - time.time())


def backoff_seconds(attempt: int) -> float:
    """0.5 s doubling to 8 s, minus up to 25 % jitter (attempt counts from 0)."""
    delay = min(INITIAL_BACKOFF * 2**attempt, MAX_BACKOFF)
    return delay * (1 - 0.25 * random.random())


class OpenAIClient:
    """A thin, typed client for the Batches and Files endpoints."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.sleep = sleep or time.sleep

    @classmethod
    def from_settings(cls, *, interactive: bool = False) -> OpenAIClient:
        from django.conf import settings

        read_timeout = settings.OPENAI_READ_TIMEOUT
        max_retries = settings.OPENAI_MAX_RETRIES
        if interactive:
            read_timeout = min(read_timeout, settings.OPENAI_PAGE_TIMEOUT)
            max_retries = min(max_retries, 1)
        return cls(
            ClientConfig(
                api_key=settings.OPENAI_API_KEY,
                base_url=settings.OPENAI_BASE_URL,
                organization=settings.OPENAI_ORG_ID,
                project=settings.OPENAI_PROJECT_ID,
                connect_timeout=settings.OPENAI_CONNECT_TIMEOUT,
                read_timeout=read_timeout,
                max_retries=max_retries,
                max_retry_wait=settings.OPENAI_PAGE_TIMEOUT if interactive else MAX_RETRY_AFTER,
            )
        )

    # --- Batches ------------------------------------------------------------------------------

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        output_expires_after_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Create a batch. Retried only where the server surely did nothing (429, refused
        connection); a timeout or 5xx is raised so the caller can reconcile."""
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            body["metadata"] = metadata
        if output_expires_after_seconds is not None:
            body["output_expires_after"] = {
                "anchor": "created_at",
                "seconds": output_expires_after_seconds,
            }
        # Not held to `_batch`'s check: the service decides what a create answer without an
        # id means (the batch may exist), and says so in its own words.
        return normalize_batch(self._json("POST", "/batches", json=body, idempotent=False))

    def list_batches(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        page = self._json("GET", "/batches", params=params)
        if not isinstance(page.get("data"), list):
            raise BadResponse("the batch list has no `data` list")
        return normalize_list(page)

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        return self._batch(self._json("GET", f"/batches/{_path_id(batch_id)}"))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._batch(self._json("POST", f"/batches/{_path_id(batch_id)}/cancel"))

    # --- Files --------------------------------------------------------------------------------

    def upload_file(
        self,
        *,
        fileobj: BinaryIO,
        filename: str,
        purpose: str = "batch",
        expires_after_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Upload a file, streamed from `fileobj` without reading it into memory. Not retried:
        the stream is consumed, and the caller keeps the file to try again."""
        fields: dict[str, Any] = {"purpose": purpose}
        if expires_after_seconds is not None:
            anchor, seconds = _expiry_field_names(azure=self.config.is_azure)
            fields[anchor] = "created_at"
            fields[seconds] = str(expires_after_seconds)
        fields["file"] = (filename, fileobj, "application/jsonl")
        encoder = MultipartEncoder(fields=fields)
        payload = self._json(
            "POST",
            "/files",
            data=encoder,
            headers={"Content-Type": encoder.content_type},
            idempotent=False,
        )
        if not isinstance(payload.get("id"), str):
            raise BadResponse("the uploaded file's answer has no id")
        return normalize_file(payload)

    def retrieve_file(self, file_id: str) -> dict[str, Any]:
        return normalize_file(self._json("GET", f"/files/{_path_id(file_id)}"))

    def delete_file(self, file_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/files/{_path_id(file_id)}")

    def open_file_content(self, file_id: str) -> requests.Response:
        """Start streaming a file's bytes; the caller iterates `iter_content` and closes it."""
        return self._send("GET", f"/files/{_path_id(file_id)}/content", stream=True)

    def iter_file_content(self, file_id: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        response = self.open_file_content(file_id)
        try:
            try:
                yield from response.iter_content(chunk_size)
            except requests.RequestException as exc:
                raise UpstreamUnavailable("the download was interrupted") from exc
        finally:
            response.close()

    # --- Plumbing -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.config.auth_style == "api-key":
            headers["api-key"] = self.config.api_key
        else:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        if self.config.organization:
            headers["OpenAI-Organization"] = self.config.organization
        if self.config.project:
            headers["OpenAI-Project"] = self.config.project
        return headers

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        try:
            payload = response.json()
        except ValueError as exc:
            raise _unreadable(response, _not_json(response)) from exc
        if not isinstance(payload, dict):
            raise _unreadable(response, "the answer is not a JSON object")
        error = payload.get("error")
        if error and "object" not in payload and "id" not in payload:
            # Some gateways report a failure with a 2xx status and OpenAI's error body.
            text = error.get("message") if isinstance(error, dict) else error
            text = _redact(str(text or "no message"), self.config)[:500]
            raise _unreadable(response, f"an error instead of a result: {text}")
        return payload

    @staticmethod
    def _batch(payload: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(payload.get("id"), str) or not isinstance(payload.get("status"), str):
            raise NotABatch("the answer is not a batch (no id or status)")
        if not is_upstream_id(payload["id"]):
            # Cached, it could be neither fetched again nor linked to: refuse it here.
            raise NotABatch("the answer's batch id is not of an id's shape (letters, digits, _, -)")
        return normalize_batch(payload)

    def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        url = self.config.url(path)
        params = self.config.query(params)
        timeout = (self.config.connect_timeout, self.config.read_timeout)
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = self.session.request(
                    method,
                    url,
                    headers={**self._headers(), **(headers or {})},
                    params=params,
                    timeout=timeout,
                    **kwargs,
                )
            except requests.ConnectionError as exc:
                # A refused connection never reached the server; a read timeout may have.
                sent = not isinstance(exc, requests.exceptions.ConnectTimeout) and _maybe_sent(exc)
                error = UpstreamUnavailable(_transport_message(exc, self.config))
                if (idempotent or not sent) and attempt < self.config.max_retries:
                    self._wait(attempt, None, method, path, "connection error")
                    attempt += 1
                    continue
                error.ambiguous = sent
                raise error from exc
            except requests.Timeout as exc:
                error = UpstreamUnavailable(_transport_message(exc, self.config))
                if idempotent and attempt < self.config.max_retries:
                    self._wait(attempt, None, method, path, "timeout")
                    attempt += 1
                    continue
                error.ambiguous = True
                raise error from exc
            except requests.RequestException as exc:
                raise UpstreamUnavailable(_transport_message(exc, self.config)) from exc

            elapsed_ms = (time.monotonic() - started) * 1000
            # Every call is logged with its request id; failures at INFO, successes at DEBUG
            # (the worker makes a call every few seconds).
            logger.log(
                logging.DEBUG if response.status_code < 400 else logging.INFO,
                "openai %s %s -> %s in %.0f ms (request id %s)",
                method,
                path,
                response.status_code,
                elapsed_ms,
                _rid(response) or "-",
            )
            if response.status_code < 400:
                return response
            error = _error_from_response(response, self.config)
            retryable = response.status_code in RETRY_STATUSES and (
                idempotent or response.status_code == 429
            )
            if isinstance(error, RateLimited) and error.quota_exhausted:
                retryable = False
            if error.retry_after is not None and error.retry_after > self.config.max_retry_wait:
                retryable = False
            if retryable and attempt < self.config.max_retries:
                response.close()
                self._wait(attempt, error.retry_after, method, path, str(response.status_code))
                attempt += 1
                continue
            if response.status_code >= 500 or response.status_code == 408:
                error.ambiguous = True
            raise error

    def _wait(
        self, attempt: int, retry_after: float | None, method: str, path: str, why: str
    ) -> None:
        delay = retry_after if retry_after is not None and retry_after >= 0 else None
        if delay is None:
            delay = backoff_seconds(attempt)
        logger.warning(
            "openai %s %s failed (%s); retry %d in %.1f s", method, path, why, attempt + 1, delay
        )
        self.sleep(delay)


def _expiry_field_names(*, azure: bool) -> tuple[str, str]:
    """The multipart names of an upload's expiry: Azure spells the nesting with dots."""
    if azure:
        return "expires_after.anchor", "expires_after.seconds"
    return "expires_after[anchor]", "expires_after[seconds]"


def _path_id(value: str) -> str:
    """An id as a URL path segment: refused (nothing sent) unless it has an upstream id's shape,
    so no caller, whatever the id's source, can make a call to another path."""
    if not is_upstream_id(value):
        shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
        raise InvalidId(
            f"{shown} is not an id (ids are 1 to 128 letters, digits, _ or -)", code="invalid_id"
        )
    return quote(value, safe="")  # a no-op for such an id; kept should the pattern ever widen


def _status_phrase(status: int) -> str:
    """The standard reason phrase ("Bad Gateway"): HTTP/2 and some proxies send none."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _rid(response: requests.Response) -> str | None:
    return response.headers.get("x-request-id")


def _unreadable(response: requests.Response, reason: str) -> BadResponse:
    """A 2xx answer that cannot be used. The request may well have taken effect (a create, a
    cancel): marked ambiguous, so a create is looked for before it is reported as failed."""
    error = BadResponse(reason, status=response.status_code, request_id=_rid(response))
    error.ambiguous = True
    return error


def _not_json(response: requests.Response) -> str:
    """Why a body is not JSON, in words that point at the likely cause."""
    if not response.content.strip():
        return "the answer is empty"
    content_type = response.headers.get("Content-Type", "").lower()
    if "html" in content_type or response.content.lstrip()[:1] == b"<":
        # A proxy's error or sign-in page; never shown, it may hold anything.
        return "the answer is an HTML page, not JSON (a proxy in the way, or a wrong base URL?)"
    return "the answer is not JSON"


def _maybe_sent(exc: Exception) -> bool:
    """Whether a connection error could have happened after the request reached the server."""
    text = repr(exc).lower()
    refused = ("refused", "name or service", "nodename", "failed to resolve", "no route")
    return not any(word in text for word in refused)


# A word of an upstream message, dots between its parts allowed ("sk-abc...wxyz").
_WORD = re.compile(r"[\w*…\-]+(?:\.{2,}[\w*…\-]+)*")
_KEY_PREFIXES = ("sk-", "rk-")
_KEY_PIECE = 8  # this many characters of the key in a row give part of it away


def _redact(text: str, config: ClientConfig) -> str:
    """The message without the key. A server that refuses a key quotes it, whole or in part
    (OpenAI: "Incorrect API key provided: sk-abc12****…wxyz"): every word that looks like a key,
    or holds 8 characters in a row of this one, goes."""
    key = config.api_key
    if key:
        text = text.replace(key, "***")
    pieces = {key[i : i + _KEY_PIECE] for i in range(len(key) - _KEY_PIECE + 1)} if key else set()

    def hide(match: re.Match[str]) -> str:
        word = match.group()
        if word.startswith(_KEY_PREFIXES) or any(piece in word for piece in pieces):
            return "***"
        return word

    return _WORD.sub(hide, text)


def _transport_message(exc: Exception, config: ClientConfig) -> str:
    if isinstance(exc, requests.Timeout):
        return (
            f"no answer from {config.base_url} within the time limit "
            f"(connect {config.connect_timeout:g} s, read {config.read_timeout:g} s)"
        )
    if isinstance(exc, requests.ConnectionError):
        return f"could not connect to {config.base_url}"
    return f"the request to {config.base_url} failed ({type(exc).__name__})"


def _error_from_response(response: requests.Response, config: ClientConfig) -> OpenAIError:
    status = response.status_code
    message, code, param = "", None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            code = err.get("code") or err.get("type")
            code = str(code) if code is not None else None
            if isinstance(err.get("param"), str):
                param = _redact(err["param"], config)[:200]
        elif isinstance(err, str):
            message = err
    if not message:
        # No JSON (an HTML page from a proxy, say): the status line reads better than markup.
        message = response.reason or _status_phrase(status)
    message = _redact(message, config)[:500]
    code = _redact(code, config)[:200] if code else code
    if status == 400 and _TOKEN_LIMIT_WORDS.search(f"{code or ''} {message}"):
        # Azure may put it only in the message; callers test the code.
        code = TOKEN_LIMIT_EXCEEDED
    kwargs = {
        "status": status,
        "request_id": _rid(response),
        "code": code,
        "retry_after": retry_after_seconds(response.headers),
        "param": param,
    }
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 429:
        return RateLimited(message, **kwargs)
    if status >= 500 or status == 408:
        return UpstreamUnavailable(message, **kwargs)
    return InvalidRequest(message, **kwargs)
