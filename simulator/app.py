"""The WSGI application: routing, auth, faults and the translation of errors into HTTP.

Two areas: the OpenAI-compatible API (auth, fault switches, call counting) and the ``/_sim``
control API (no auth) that tests and the demo use to steer the simulator. The API's paths, auth
and spelling follow the simulator's dialect (``/v1``, ``/openai/v1`` or ``/openai`` with
``?api-version=``, see :mod:`simulator.dialects`); the control API is the same in every one.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from simulator import dialects
from simulator.dialects import Dialect
from simulator.engine import Simulator
from simulator.errors import ApiError, bad_request, not_found
from simulator.multipart import MultipartError, parse_multipart
from simulator.store import CHUNK

logger = logging.getLogger("simulator")

StartResponse = Callable[..., Any]
MAX_JSON_BYTES = 1024 * 1024
# What a broken proxy might send: a 200 whose body is cut off mid-JSON.
MALFORMED_BODY = b'{"object": "batch", "id": "batch_'
# The HTML error page of a proxy in front of the API (nginx's, as most are).
PROXY_PAGE = (
    "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
# What a proxy that wants a sign-in answers instead of the API, with a 200.
PROXY_SIGN_IN_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head><body><h1>Sign in"
    '</h1><form method="post" action="/login"><input name="password" type="password">'
    "<button>Continue</button></form></body></html>\n"
)
# A gateway's error, sent with a 200 (some do).
ERROR_IN_200 = {
    "error": {
        "message": "The upstream service is overloaded; please try again later.",
        "type": "server_error",
        "param": None,
        "code": "upstream_overloaded",
    }
}
# The WSGI environ key under which the simulator's server passes the client's socket, so that
# the ``reset`` and ``cut_downloads`` faults can drop the connection.
SOCKET_KEY = "simulator.socket"


@dataclass
class Response:
    status: int
    body: Iterable[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(payload).encode()
    extra = list((headers or {}).items())
    return Response(
        status,
        [data],
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra],
    )


class RequestBody:
    """``wsgi.input`` limited to CONTENT_LENGTH, so reads never block past the body's end."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self._stream = environ["wsgi.input"]
        try:
            self.remaining = max(0, int(environ.get("CONTENT_LENGTH") or 0))
        except ValueError:
            self.remaining = 0

    def read(self, size: int = -1, /) -> bytes:
        size = self.remaining if size < 0 else min(size, self.remaining)
        if size <= 0:
            return b""
        data = self._stream.read(size)
        self.remaining = self.remaining - len(data) if data else 0
        return data

    def drain(self) -> None:
        """Read what the handler left, so the client is not cut off mid-upload."""
        while self.remaining and self.read(CHUNK):
            pass

    def json(self) -> Any:
        if self.remaining > MAX_JSON_BYTES:
            raise bad_request("The request body is too large.")
        raw = self.read()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly.)"
            ) from exc


Handler = Callable[["Request"], Response]


@dataclass
class Request:
    environ: dict[str, Any]
    body: RequestBody
    params: dict[str, str]

    def query(self, name: str) -> str | None:
        values = parse_qs(self.environ.get("QUERY_STRING", "")).get(name)
        return values[-1] if values else None

    def int_query(self, name: str, default: int) -> int:
        raw = self.query(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise bad_request(
                f"Invalid '{name}': expected an integer.", param=name, code="invalid_value"
            ) from None


class SimulatorApp:
    """WSGI callable over a :class:`Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        api = [
            ("POST", "/files", "createFile", self.create_file),
            ("GET", "/files", "listFiles", self.list_files),
            ("GET", "/files/{file_id}", "retrieveFile", self.retrieve_file),
            ("DELETE", "/files/{file_id}", "deleteFile", self.delete_file),
            ("GET", "/files/{file_id}/content", "downloadFile", self.download_file),
            ("POST", "/batches", "createBatch", self.create_batch),
            ("GET", "/batches", "listBatches", self.list_batches),
            ("GET", "/batches/{batch_id}", "retrieveBatch", self.retrieve_batch),
            ("POST", "/batches/{batch_id}/cancel", "cancelBatch", self.cancel_batch),
        ]
        # The same operations under each dialect's prefix; the one used is the simulator's.
        self._api_routes = {
            name: _compile([(m, dialect.prefix + path, op, h) for m, path, op, h in api])
            for name, dialect in dialects.DIALECTS.items()
        }
        self._control_routes = _compile(
            [
                ("POST", "/_sim/advance", "advance", self.control_advance),
                ("GET", "/_sim/faults", "faults", self.control_get_faults),
                ("POST", "/_sim/faults", "faults", self.control_faults),
                ("POST", "/_sim/reset", "reset", self.control_reset),
                ("GET", "/_sim/state", "state", self.control_state),
                ("POST", "/_sim/seed", "seed", self.control_seed),
                ("POST", "/_sim/batches/{batch_id}/expire", "expire", self.control_expire),
                ("POST", "/_sim/batches/{batch_id}/fail", "fail", self.control_fail),
                ("POST", "/_sim/batches/{batch_id}/forget", "forget", self.control_forget),
                ("POST", "/_sim/batches/{batch_id}/lag", "lag", self.control_lag),
                ("GET", "/_sim/limits", "limits", self.control_get_limits),
                ("POST", "/_sim/limits", "limits", self.control_limits),
            ]
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request_id = f"req_{uuid.uuid4().hex}"
        body = RequestBody(environ)
        path = environ.get("PATH_INFO") or "/"
        style: dict[str, bool] = {}
        try:
            if path.startswith("/_sim/"):
                response = self._dispatch(self._control_routes, environ, body)
            else:
                style = {
                    "message_only": self.sim.faults.quirks.errors_message_only,
                    "azure": self.sim.profile.azure_payloads,
                }
                response = self._api(environ, body)
        except ApiError as error:
            response = json_response(error.status, error.body(**style), error.headers)
        except _Reset:
            body.drain()
            _abort(environ)
            # wsgiref takes this for a client that went away, and writes nothing.
            raise ConnectionAbortedError("connection reset by the simulator") from None
        except Exception:
            logger.exception("simulator bug while answering %s %s", environ["REQUEST_METHOD"], path)
            error = ApiError(500, "Internal simulator error.", type="server_error")
            response = json_response(500, error.body(**style))
        finally:
            body.drain()
        if style and self.sim.faults.content_type:  # an API answer, with the wrong type
            response.headers = [
                (name, self.sim.faults.content_type if name == "Content-Type" else value)
                if value == "application/json"
                else (name, value)
                for name, value in response.headers
            ]
        phrase = HTTPStatus(response.status).phrase
        start_response(
            f"{response.status} {phrase}", [*response.headers, ("x-request-id", request_id)]
        )
        return response.body

    # -- plumbing -------------------------------------------------------------------------

    def _dispatch(
        self,
        routes: list[tuple[str, re.Pattern[str], str, Handler]],
        environ: dict[str, Any],
        body: RequestBody,
        *,
        on_match: Callable[[str], None] | None = None,
        hint: str = "",
    ) -> Response:
        method = environ["REQUEST_METHOD"].upper()
        path = environ.get("PATH_INFO") or "/"
        for route_method, pattern, name, handler in routes:
            match = pattern.match(path)
            if match and route_method == method:
                if on_match:
                    on_match(name)
                return handler(Request(environ, body, match.groupdict()))
        raise not_found(f"Invalid URL ({method} {path}){hint}")

    def _api(self, environ: dict[str, Any], body: RequestBody) -> Response:
        dialect = self.sim.profile
        # With ``act_first``, the fault and the latency come after the request was carried out.
        after: dict[str, Any] = {}

        def before(operation: str) -> None:
            self.sim.record_call(operation)
            faults = self.sim.faults
            targeted = faults.applies_to(operation)
            if targeted and faults.latency and not faults.act_first:
                time.sleep(faults.latency)
            if dialect.needs_api_version:
                _check_api_version(environ)
            self._authenticate(environ, dialect)
            fault = self.sim.take_fault(operation)
            if faults.act_first and targeted:
                after.update(fault=fault, latency=faults.latency)
            elif fault:
                raise _Faulted(fault)

        # A client set up for another dialect lands on paths this one does not serve: say
        # which API is here, so its 404 reads as "wrong dialect or base URL".
        hint = ""
        if dialect.name != "openai":
            hint = f". This server speaks {dialect.title}; its paths start with {dialect.prefix}/."
        try:
            response = self._dispatch(
                self._api_routes[dialect.name], environ, body, on_match=before, hint=hint
            )
        except _Faulted as faulted:
            return self._fault_answer(faulted.name)
        if after.get("latency"):
            time.sleep(after["latency"])
        if after.get("fault"):
            close = getattr(response.body, "close", None)
            if close:
                close()
            return self._fault_answer(after["fault"])
        return response

    def _fault_answer(self, fault: str) -> Response:
        """The answer a counted fault gives instead of the real one (see ``Faults``)."""
        faults = self.sim.faults
        if fault == "rate_limit":
            headers = {}
            if faults.retry_after is not None:
                headers["retry-after"] = f"{faults.retry_after:g}"
            raise ApiError(
                429,
                "Rate limit reached for requests. Please try again later.",
                type="requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if fault == "quota":
            raise ApiError(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                type="insufficient_quota",
                code="insufficient_quota",
            )
        if fault == "server_error":
            raise ApiError(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type="server_error",
            )
        if fault == "proxy_error":
            status = faults.proxy_status
            page = (
                PROXY_SIGN_IN_PAGE
                if status < 300
                else PROXY_PAGE.format(status=f"{status} {HTTPStatus(status).phrase}")
            )
            data = page.encode()
            return Response(
                status,
                [data],
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))],
            )
        if fault == "reset":
            raise _Reset
        if fault == "empty_body":
            return Response(
                200, [b""], [("Content-Type", "application/json"), ("Content-Length", "0")]
            )
        if fault == "error_body":
            return json_response(200, ERROR_IN_200)
        return Response(  # malformed
            200,
            [MALFORMED_BODY],
            [("Content-Type", "application/json"), ("Content-Length", str(len(MALFORMED_BODY)))],
        )

    def _authenticate(self, environ: dict[str, Any], dialect: Dialect) -> None:
        token = _presented_key(environ, dialect)
        if not token:
            if dialect.api_key_header:
                raise ApiError(
                    401,
                    "Access denied due to missing subscription key. Make sure to include "
                    "subscription key when making requests to an API.",
                    code="401",
                )
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        expected = self.sim.api_key
        if expected and not hmac.compare_digest(token.encode(), expected.encode()):
            # Never echo the key back, not even masked.
            if dialect.api_key_header:
                raise ApiError(
                    401,
                    "Access denied due to invalid subscription key or wrong API endpoint. Make "
                    "sure to provide a valid key for an active subscription and use a correct "
                    "regional API endpoint for your resource.",
                    code="401",
                )
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    # -- /v1/files ------------------------------------------------------------------------

    def create_file(self, request: Request) -> Response:
        content_type = request.environ.get("CONTENT_TYPE", "")
        try:
            form = parse_multipart(request.body, content_type, self.sim.storage_dir)
        except MultipartError as exc:
            raise bad_request(f"Invalid multipart body: {exc}.") from exc
        adopted = None
        expiry_fields = self.sim.profile.expiry_fields
        try:
            allowed = {"file", "purpose", *(name for pair in expiry_fields for name in pair)}
            for name in [*form.fields, *form.files]:
                if name not in allowed:
                    raise bad_request(
                        f"Unrecognized request argument supplied: {name}",
                        param=name,
                        code="unknown_parameter",
                    )
            upload = form.files.get("file")
            if upload is None:
                raise bad_request("Missing required parameter: 'file'.", param="file")
            payload = self.sim.create_file(
                filename=upload.filename,
                purpose=form.fields.get("purpose"),
                content=upload.path,
                expires_after=_form_expires_after(form.fields, expiry_fields),
            )
            adopted = upload.path
            return json_response(200, self._file_out(payload))
        finally:
            form.discard(keep=adopted)

    def list_files(self, request: Request) -> Response:
        page = self.sim.list_files(
            purpose=request.query("purpose"),
            limit=request.int_query("limit", 10_000),
            order=request.query("order") or "desc",
            after=request.query("after"),
        )
        return json_response(200, self._page_out(page, self._file_view))

    def retrieve_file(self, request: Request) -> Response:
        return json_response(200, self._file_out(self.sim.get_file(request.params["file_id"])))

    def delete_file(self, request: Request) -> Response:
        return json_response(200, self.sim.delete_file(request.params["file_id"]))

    def download_file(self, request: Request) -> Response:
        record, blob = self.sim.file_content(request.params["file_id"])
        filename = record.filename.replace('"', "")
        chunks = blob.chunks()
        if self.sim.take_cut():
            chunks = _cut_short(chunks, blob.size, request.environ)
        return Response(
            200,
            chunks,
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(blob.size)),
                ("Content-Disposition", f'attachment; filename="{filename}"'),
            ],
        )

    # -- /v1/batches ----------------------------------------------------------------------

    def create_batch(self, request: Request) -> Response:
        return json_response(200, self._batch_out(self.sim.create_batch(request.body.json())))

    def list_batches(self, request: Request) -> Response:
        page = self.sim.list_batches(
            after=request.query("after"), limit=request.int_query("limit", 20)
        )
        return json_response(200, self._page_out(page, self._listed_batch_view))

    def retrieve_batch(self, request: Request) -> Response:
        return json_response(200, self._batch_out(self.sim.get_batch(request.params["batch_id"])))

    def cancel_batch(self, request: Request) -> Response:
        return json_response(
            200, self._batch_out(self.sim.cancel_batch(request.params["batch_id"]))
        )

    # -- how answers are spelt: the dialect first, then the quirks --------------------------

    def _batch_out(self, batch: dict[str, Any]) -> Any:
        return self._quirked(self._dropped(dialects.batch_view(self.sim.profile, batch)))

    def _file_out(self, file: dict[str, Any]) -> Any:
        return self._quirked(self._file_view(file))

    def _page_out(self, page: dict[str, Any], view: Callable[[dict[str, Any]], Any]) -> Any:
        return self._quirked({**page, "data": [view(item) for item in page["data"]]})

    def _listed_batch_view(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self._dropped(dialects.batch_view(self.sim.profile, batch, listed=True))

    def _dropped(self, view: dict[str, Any]) -> dict[str, Any]:
        """A Batch object without the keys ``drop_batch_fields`` names."""
        drop = self.sim.faults.drop_batch_fields
        return {k: v for k, v in view.items() if k not in drop} if drop else view

    def _file_view(self, file: dict[str, Any]) -> dict[str, Any]:
        return dialects.file_view(self.sim.profile, file)

    def _quirked(self, payload: Any) -> Any:
        return _drop_nulls(payload) if self.sim.faults.quirks.omit_nulls else payload

    # -- /_sim control API ----------------------------------------------------------------

    def control_advance(self, request: Request) -> Response:
        data = _object(request.body.json())
        seconds = data.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise bad_request("'seconds' must be a non-negative number.", param="seconds")
        return json_response(200, {"now": self.sim.advance(seconds)})

    def control_get_faults(self, request: Request) -> Response:
        return json_response(200, self.sim.faults.to_dict())

    def control_faults(self, request: Request) -> Response:
        try:
            return json_response(200, self.sim.set_faults(_object(request.body.json())))
        except ValueError as exc:
            raise bad_request(str(exc)) from exc

    def control_reset(self, request: Request) -> Response:
        self.sim.reset()
        return json_response(200, {"reset": True})

    def control_state(self, request: Request) -> Response:
        return json_response(200, self.sim.state())

    def control_get_limits(self, request: Request) -> Response:
        return json_response(200, self.sim.limits())

    def control_limits(self, request: Request) -> Response:
        try:
            return json_response(200, self.sim.set_limits(_object(request.body.json())))
        except ValueError as exc:
            raise bad_request(str(exc)) from exc

    def control_seed(self, request: Request) -> Response:
        data = _object(request.body.json())
        options = {k: data[k] for k in ("status", "endpoint", "requests", "metadata") if k in data}
        try:
            return json_response(200, self.sim.seed_batches(count=data.get("count", 1), **options))
        except (TypeError, ValueError) as exc:
            raise bad_request(str(exc)) from exc

    def control_expire(self, request: Request) -> Response:
        return json_response(200, self.sim.expire_batch(request.params["batch_id"]))

    def control_fail(self, request: Request) -> Response:
        data = _object(request.body.json())
        batch = self.sim.fail_batch(
            request.params["batch_id"], code=data.get("code"), message=data.get("message")
        )
        return json_response(200, batch)

    def control_forget(self, request: Request) -> Response:
        return json_response(200, self.sim.forget_batch(request.params["batch_id"]))

    def control_lag(self, request: Request) -> Response:
        data = _object(request.body.json())
        try:
            return json_response(
                200, self.sim.lag_batch(request.params["batch_id"], data.get("seconds", 0))
            )
        except ValueError as exc:
            raise bad_request(str(exc), param="seconds") from exc


class _Faulted(Exception):
    """Raised before a handler runs, so a faulted answer has no side effect."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _Reset(Exception):
    """The connection must be dropped without an answer."""


def _abort(environ: dict[str, Any]) -> None:
    """Make the server's close of this connection a reset (RST), not an orderly end."""
    sock = environ.get(SOCKET_KEY)
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone: nothing left to reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _cut_short(chunks: Iterable[bytes], size: int, environ: dict[str, Any]) -> Iterable[bytes]:
    """Send the first half of a body whose full length was announced, then drop the
    connection: a download that breaks part way."""
    keep, sent = max(1, size // 2), 0
    try:
        for chunk in chunks:
            part = chunk[: keep - sent]
            if part:
                yield part
                sent += len(part)
            if sent >= keep:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()
    _abort(environ)
    raise ConnectionAbortedError("download cut short by the simulator")


def _compile(
    routes: list[tuple[str, str, str, Handler]],
) -> list[tuple[str, re.Pattern[str], str, Handler]]:
    compiled = []
    for method, template, name, handler in routes:
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")
        compiled.append((method, pattern, name, handler))
    return compiled


def _object(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.")
    return data


def _form_expires_after(
    fields: dict[str, str], names: tuple[tuple[str, str], ...]
) -> dict[str, Any] | None:
    """The upload's ``expires_after``, from the first pair of field names (the dialect's
    spellings: ``expires_after[anchor]`` / ``expires_after.anchor``...) the form uses."""
    for anchor_name, seconds_name in names:
        anchor = fields.get(anchor_name)
        seconds = fields.get(seconds_name)
        if anchor is None and seconds is None:
            continue
        try:
            return {"anchor": anchor, "seconds": int(seconds or "")}
        except ValueError:
            raise bad_request(
                f"Invalid '{seconds_name}': expected an integer.",
                param="expires_after",
                code="invalid_value",
            ) from None
    return None


def _presented_key(environ: dict[str, Any], dialect: Dialect) -> str:
    """The key the request carries in a header the dialect accepts ("" when none)."""
    if dialect.api_key_header:
        key = environ.get("HTTP_API_KEY", "").strip()
        if key:
            return key
    if dialect.bearer_auth:
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return ""


def _check_api_version(environ: dict[str, Any]) -> None:
    """Azure's dated API answers nothing without a known ``?api-version=``."""
    values = parse_qs(environ.get("QUERY_STRING", "")).get("api-version")
    if not values:
        raise bad_request(dialects.MISSING_API_VERSION, code="MissingApiVersionParameter")
    if values[-1] not in dialects.AZURE_API_VERSIONS:
        raise bad_request(
            f"Unsupported api-version '{values[-1]}'. The supported api-versions are: "
            + ", ".join(dialects.AZURE_API_VERSIONS)
            + ".",
            code="BadRequest",
        )


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value
