"""Sessions that end after BATCHWEB_SESSION_IDLE_MINUTES without a person's request.

The session's expiry (SESSION_COOKIE_AGE, the idle time) is pushed forward by saving the
session, at most once a minute, on requests a person makes. Live updates (htmx GETs, every few
seconds while a page is open) are not a person's doing: they neither extend the session nor
write to the database, so a page left open still signs out after the idle time. The cheaper and
simpler SESSION_SAVE_EVERY_REQUEST would write the session row on every poll of every open tab.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url

SEEN = "_bw_seen"  # when the expiry was last pushed forward (Unix seconds)
REFRESH_SECONDS = 60


class SessionIdleMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        background = request.method == "GET" and request.headers.get("HX-Request") == "true"
        if request.user.is_authenticated and not background:
            now = int(time.time())
            if now - request.session.get(SEEN, 0) >= min(REFRESH_SECONDS, _idle_seconds() // 10):
                request.session[SEEN] = now  # saved by SessionMiddleware with a new expiry
        response = self.get_response(request)
        if background and response.status_code == 302 and _to_login(response):
            # The session ended while a page was open: reload it (to the sign-in page) instead
            # of swapping the sign-in form into a fragment.
            response = HttpResponse(status=204)
            response["HX-Refresh"] = "true"
        return response


def _idle_seconds() -> int:
    return int(settings.SESSION_COOKIE_AGE)


def _to_login(response: HttpResponse) -> bool:
    return response.get("Location", "").startswith(resolve_url(settings.LOGIN_URL))


def session_started(*, request: HttpRequest | None, **kwargs: object) -> None:
    """At sign-in (Django's user_logged_in signal), when the session is saved anyway: the
    first requests after it need not write."""
    if request is not None and hasattr(request, "session"):
        request.session[SEEN] = int(time.time())
