"""The WSGI application: routing, auth, faults and the translation of errors into HTTP.

Two areas: the OpenAI-compatible ``/v1`` API (Bearer auth, fault switches, call counting) and
the ``/_sim`` control API (no auth) that tests and the demo use to steer the simulator.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from simulator.engine import Simulator
from simulator.errors import ApiError, bad_request, not_found
from simulator.multipart import MultipartError, parse_multipart
from simulator.store import CHUNK

logger = logging.getLogger("simulator")

StartResponse = Callable[..., Any]
MAX_JSON_BYTES = 1024 * 1024
# What a broken proxy might send: a 200 whose body is cut off mid-JSON.
MALFORMED_BODY = b'{"object": "batch", "id": "batch_'


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
        self._api_routes = _compile(
            [
                ("POST", "/v1/files", "createFile", self.create_file),
                ("GET", "/v1/files", "listFiles", self.list_files),
                ("GET", "/v1/files/{file_id}", "retrieveFile", self.retrieve_file),
                ("DELETE", "/v1/files/{file_id}", "deleteFile", self.delete_file),
                ("GET", "/v1/files/{file_id}/content", "downloadFile", self.download_file),
                ("POST", "/v1/batches", "createBatch", self.create_batch),
                ("GET", "/v1/batches", "listBatches", self.list_batches),
                ("GET", "/v1/batches/{batch_id}", "retrieveBatch", self.retrieve_batch),
                ("POST", "/v1/batches/{batch_id}/cancel", "cancelBatch", self.cancel_batch),
            ]
        )
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
            ]
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request_id = f"req_{uuid.uuid4().hex}"
        body = RequestBody(environ)
        path = environ.get("PATH_INFO") or "/"
        message_only = False
        try:
            if path.startswith("/_sim/"):
                response = self._dispatch(self._control_routes, environ, body)
            else:
                message_only = self.sim.faults.quirks.errors_message_only
                response = self._api(environ, body)
        except ApiError as error:
            response = json_response(
                error.status, error.body(message_only=message_only), error.headers
            )
        except Exception:
            logger.exception("simulator bug while answering %s %s", environ["REQUEST_METHOD"], path)
            error = ApiError(500, "Internal simulator error.", type="server_error")
            response = json_response(500, error.body(message_only=message_only))
        finally:
            body.drain()
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
    ) -> Response:
        method = environ["REQUEST_METHOD"].upper()
        path = environ.get("PATH_INFO") or "/"
        for route_method, pattern, name, handler in routes:
            match = pattern.match(path)
            if match and route_method == method:
                if on_match:
                    on_match(name)
                return handler(Request(environ, body, match.groupdict()))
        raise not_found(f"Invalid URL ({method} {path})")

    def _api(self, environ: dict[str, Any], body: RequestBody) -> Response:
        def before(operation: str) -> None:
            self.sim.record_call(operation)
            latency = self.sim.faults.latency
            if latency:
                time.sleep(latency)
            self._authenticate(environ)
            fault = self.sim.take_fault()
            if fault == "rate_limit":
                raise ApiError(
                    429,
                    "Rate limit reached for requests. Please try again later.",
                    type="requests",
                    code="rate_limit_exceeded",
                    headers={"retry-after": f"{self.sim.faults.retry_after:g}"},
                )
            if fault == "server_error":
                raise ApiError(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    type="server_error",
                )
            if fault == "malformed":
                raise _Malformed

        try:
            return self._dispatch(self._api_routes, environ, body, on_match=before)
        except _Malformed:
            return Response(
                200,
                [MALFORMED_BODY],
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(MALFORMED_BODY))),
                ],
            )

    def _authenticate(self, environ: dict[str, Any]) -> None:
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        expected = self.sim.api_key
        if expected and not hmac.compare_digest(token.encode(), expected.encode()):
            # Never echo the key back, not even masked.
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    # -- /v1/files ------------------------------------------------------------------------

    def create_file(self, request: Request) -> Response:
        content_type = request.environ.get("CONTENT_TYPE", "")
        try:
            form = parse_multipart(request.body, content_type, self.sim.storage_dir)
        except MultipartError as exc:
            raise bad_request(f"Invalid multipart body: {exc}.") from exc
        adopted = None
        try:
            allowed = {"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"}
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
                expires_after=_form_expires_after(form.fields),
            )
            adopted = upload.path
            return json_response(200, self._quirked(payload))
        finally:
            form.discard(keep=adopted)

    def list_files(self, request: Request) -> Response:
        page = self.sim.list_files(
            purpose=request.query("purpose"),
            limit=request.int_query("limit", 10_000),
            order=request.query("order") or "desc",
            after=request.query("after"),
        )
        return json_response(200, self._quirked(page))

    def retrieve_file(self, request: Request) -> Response:
        return json_response(200, self._quirked(self.sim.get_file(request.params["file_id"])))

    def delete_file(self, request: Request) -> Response:
        return json_response(200, self.sim.delete_file(request.params["file_id"]))

    def download_file(self, request: Request) -> Response:
        record, blob = self.sim.file_content(request.params["file_id"])
        filename = record.filename.replace('"', "")
        return Response(
            200,
            blob.chunks(),
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(blob.size)),
                ("Content-Disposition", f'attachment; filename="{filename}"'),
            ],
        )

    # -- /v1/batches ----------------------------------------------------------------------

    def create_batch(self, request: Request) -> Response:
        return json_response(200, self._quirked(self.sim.create_batch(request.body.json())))

    def list_batches(self, request: Request) -> Response:
        page = self.sim.list_batches(
            after=request.query("after"), limit=request.int_query("limit", 20)
        )
        return json_response(200, self._quirked(page))

    def retrieve_batch(self, request: Request) -> Response:
        return json_response(200, self._quirked(self.sim.get_batch(request.params["batch_id"])))

    def cancel_batch(self, request: Request) -> Response:
        return json_response(200, self._quirked(self.sim.cancel_batch(request.params["batch_id"])))

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


class _Malformed(Exception):
    """Raised before a handler runs, so a malformed answer has no side effect."""


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


def _form_expires_after(fields: dict[str, str]) -> dict[str, Any] | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    try:
        return {"anchor": anchor, "seconds": int(seconds or "")}
    except ValueError:
        raise bad_request(
            "Invalid 'expires_after[seconds]': expected an integer.",
            param="expires_after",
            code="invalid_value",
        ) from None


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value
