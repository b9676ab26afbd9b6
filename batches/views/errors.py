"""Error pages that say what went wrong and which setting fixes it."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Settings.CSRF_FAILURE_VIEW: a refused form, explained. Django's `reason` is matched to
    a cause, never shown as it is."""
    cookie_missing = settings.CSRF_COOKIE_NAME not in request.COOKIES
    if cookie_missing and settings.CSRF_COOKIE_SECURE and not request.is_secure():
        cause = "plain-http"
    elif "Origin checking failed" in reason or "Referer checking failed" in reason:
        cause = "origin"
    elif cookie_missing:
        cause = "no-cookie"
    else:
        cause = "expired"
    context = {
        "cause": cause,
        "origin": request.headers.get("Origin", "")[:200],
        "host": request.get_host() if cause == "origin" else "",
        "behind_proxy": settings.SECURE_PROXY_SSL_HEADER is not None,
    }
    return render(request, "errors/csrf.html", context, status=403)
