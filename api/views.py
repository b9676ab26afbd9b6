"""The OpenAI-compatible API under /v1/: thin views over api.services.

Answers are the upstream objects (normalised to OpenAI's shape), so the official SDK works with
`base_url` pointed here and a personal token as its key.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from batches import roles

from .auth import token_rule
from .errors import ApiError, answer, error_response
from .models import Scope
from .services import batches as batch_services
from .services import files as file_services

OPENAPI_PATH = Path(__file__).parent / "openapi.yaml"
SOURCE_HEADER = "X-Batchweb-Source"


def _methods(request: HttpRequest, *allowed: str) -> HttpResponse | None:
    if request.method in allowed:
        return None
    response = error_response(
        405,
        f"{request.method} is not allowed on {request.path}; use {' or '.join(allowed)}.",
        code="method_not_allowed",
    )
    response["Allow"] = ", ".join(allowed)
    return response


def _dispatcher(name: str, routes: dict[str, object], permissions: tuple[str, ...]):
    """One URL, a view per method, each with its own rule (GET reads, POST submits)."""

    @csrf_exempt
    def dispatch(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        view = routes.get(request.method or "")
        if view is None:
            return _methods(request, *routes)
        return view(request, *args, **kwargs)

    dispatch.__name__ = name
    dispatch.permissions = permissions
    dispatch.token_auth = True
    return dispatch


# --- Files ---------------------------------------------------------------------------------


@token_rule(roles.SUBMIT, scope=Scope.SUBMIT)
def _file_upload(request: HttpRequest) -> HttpResponse:
    upload = request.FILES.get("file")
    if upload is None:
        raise ApiError(
            400,
            "Send the file as multipart/form-data with a `file` part and purpose=batch.",
            param="file",
            code="missing_required_parameter",
        )
    seconds = request.POST.get("expires_after[seconds]")
    expires = None
    if seconds:
        try:
            expires = int(seconds)
        except ValueError:
            expires = -1
        low, high = file_services.EXPIRY_SECONDS
        if not low <= expires <= high or request.POST.get("expires_after[anchor]") != "created_at":
            raise ApiError(
                400,
                f"expires_after must have anchor created_at and seconds from {low} to {high}.",
                param="expires_after",
                code="invalid_value",
            )
    payload = file_services.file_upload(
        user=request.user,
        connection=request.connection,
        stream=upload.file,
        filename=upload.name or "input.jsonl",
        purpose=request.POST.get("purpose", ""),
        expires_after_seconds=expires,
    )
    return answer(payload)


files = _dispatcher("files", {"POST": _file_upload}, (roles.SUBMIT,))


@token_rule(roles.VIEW)
def file_detail(request: HttpRequest, file_id: str) -> HttpResponse:
    if refused := _methods(request, "GET"):
        return refused
    return answer(
        file_services.file_retrieve(
            user=request.user, connection=request.connection, file_id=file_id
        )
    )


@token_rule(roles.VIEW)
def file_content(request: HttpRequest, file_id: str) -> HttpResponse:
    if refused := _methods(request, "GET"):
        return refused
    chunks, content_type = file_services.file_content(
        user=request.user, connection=request.connection, file_id=file_id
    )
    return StreamingHttpResponse(chunks, content_type=content_type)


# --- Batches -------------------------------------------------------------------------------


@token_rule(roles.SUBMIT, scope=Scope.SUBMIT)
def _batch_create(request: HttpRequest) -> HttpResponse:
    try:
        body = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            400,
            "The request body is not JSON: send a JSON object with input_file_id, endpoint and "
            "completion_window.",
            code="invalid_json",
        ) from None
    args = batch_services.create_args(body, request.connection)
    key = (request.headers.get("Idempotency-Key") or "").strip() or None
    if key and len(key) > 255:
        raise ApiError(
            400,
            "The Idempotency-Key may be at most 255 characters.",
            param="Idempotency-Key",
            code="invalid_value",
        )
    batch, _made = batch_services.api_batch_create(
        user=request.user, connection=request.connection, args=args, idempotency_key=key
    )
    return answer(batch.raw)


@token_rule(roles.VIEW)
def _batch_list(request: HttpRequest) -> HttpResponse:
    after, limit = batch_services.list_params(request.GET)
    page, source = batch_services.api_batch_list(
        connection=request.connection, after=after, limit=limit
    )
    response = answer(page)
    response[SOURCE_HEADER] = source
    return response


batches = _dispatcher("batches", {"GET": _batch_list, "POST": _batch_create}, (roles.VIEW,))


@token_rule(roles.VIEW)
def batch_detail(request: HttpRequest, batch_id: str) -> HttpResponse:
    if refused := _methods(request, "GET"):
        return refused
    batch, source = batch_services.api_batch_retrieve(
        connection=request.connection, batch_id=batch_id
    )
    response = answer(batch.raw)
    response[SOURCE_HEADER] = source
    return response


@token_rule(roles.CANCEL_OWN, roles.CANCEL_ANY, scope=Scope.SUBMIT)
def batch_cancel(request: HttpRequest, batch_id: str) -> HttpResponse:
    if refused := _methods(request, "POST"):
        return refused
    batch = batch_services.api_batch_cancel(
        user=request.user, connection=request.connection, batch_id=batch_id
    )
    return answer(batch.raw)


# --- The rest ------------------------------------------------------------------------------


@csrf_exempt
def unknown(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other /v1/ path: OpenAI's 404 shape rather than an HTML page a script cannot read."""
    return error_response(
        404,
        f"batchweb does not serve {request.method} {request.path}: it offers the Files and "
        "Batches calls of a batch script (see /v1/openapi.yaml).",
        code="unknown_url",
    )


unknown.token_auth = True
unknown.permissions = ()


def openapi(request: HttpRequest) -> HttpResponse:
    """The OpenAPI document of /v1/ (public: it describes the API, nothing of this site)."""
    if refused := _methods(request, "GET", "HEAD"):
        return refused
    return FileResponse(OPENAPI_PATH.open("rb"), content_type="application/yaml")
