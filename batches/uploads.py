"""Request bodies larger than any input file batchweb takes are refused before they are read.

The limit is the largest byte limit of any connection (BATCHWEB's 200 MB default, or a
connection's own) plus the room the form's other fields may take (DATA_UPLOAD_MAX_MEMORY_SIZE).
Under WSGI Django reads exactly CONTENT_LENGTH bytes of a body and none without one, so the
length announced is all there is to check: a longer body is cut at it, a chunked one without a
length is read as empty. Smaller bodies pass without a query; the per-connection limit and the
checks of the file itself come later, in the form.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from .models import Connection
from .models.connections import MAX_FILE_BYTES


def upload_limit() -> int:
    """The largest request body batchweb reads, in bytes."""
    limits = Connection.objects.values_list("max_file_bytes", flat=True)
    largest = max((limit or MAX_FILE_BYTES for limit in limits), default=MAX_FILE_BYTES)
    return largest + int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def _announced_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # Django reads no body then either


def _megabytes(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size:,} bytes"
    return f"{size / (1024 * 1024):,.0f} MB"


class UploadLimitMiddleware:
    """A 413 with the limit in words for a body over `upload_limit()`, before anything reads
    it (place it before any middleware that reads request.POST, e.g. CSRF's view check)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        size = _announced_length(request)
        if size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE and size > (limit := upload_limit()):
            return _too_large(request, size=size, limit=limit)
        return self.get_response(request)


def _too_large(request: HttpRequest, *, size: int, limit: int) -> HttpResponse:
    message = (
        f"The upload is too large: {_megabytes(size)}, and batchweb takes at most "
        f"{_megabytes(limit)} in one request (the largest input file a connection allows, "
        "plus the form). Split the file into smaller batches."
    )
    if request.path.startswith("/v1/"):
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "file",
                "code": "request_too_large",
            }
        }
        return JsonResponse(body, status=413)
    html = render_to_string("413.html", {"message": message}, request=request)
    return HttpResponse(html, status=413)
