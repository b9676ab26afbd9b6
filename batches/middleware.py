"""What every signed-in request passes through: sessions that end after
BATCHWEB_SESSION_IDLE_MINUTES without a person's request, and `Cache-Control: private,
no-store` on every answer (PrivateNoStoreMiddleware, below).

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
from django.utils.cache import cc_delim_re
from django.utils.functional import SimpleLazyObject

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


# --- Nothing a signed-in person is sent is kept by a browser or a proxy ------------------------

PRIVATE_NO_STORE = "private, no-store"


class PrivateNoStoreMiddleware:
    """Every answer to a signed-in request (pages, fragments, CSV exports, result downloads,
    /v1/ answers to a token) is sent with `Cache-Control: private, no-store`: no shared cache
    keeps it, and no browser writes it to disk, where the next person at a shared computer
    or the back button after sign-out would find it. The one place this is decided.

    A view's own value is kept when it is as strict for what matters: `no-store` anywhere
    (never_cache, the token page), or `private` with `no-cache`: the live polls
    (views/batches.py `live_poll`), which answer 304 to the ETag the browser already holds;
    a browser sends If-None-Match only for a copy it stored, so `no-store` there would turn
    every poll back into a full answer. Their copy stays in that browser only, and it is
    asked about again each time. Anything weaker (`public`, a `max-age`) is replaced.

    Anonymous answers and static files (WhiteNoise answers before this) are left as they are.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if _signed_in(request) and not _strict_enough(response.get("Cache-Control", "")):
            response["Cache-Control"] = PRIVATE_NO_STORE
        return response


def _signed_in(request: HttpRequest) -> bool:
    """Signed in with the session, or just now (sign-in replaces `request.user`), or sending
    credentials (a /v1/ token: also the answers given before the token is looked at, such as
    a 405 or an unknown /v1/ path). Without a session cookie the lazy user is anonymous: not
    asked, so no session is loaded for nothing."""
    if "Authorization" in request.headers:
        return True
    user = getattr(request, "user", None)
    if user is None:
        return False
    session = getattr(request, "session", None)
    if isinstance(user, SimpleLazyObject) and not (session and session.session_key):
        return False
    return bool(user.is_authenticated)


def _strict_enough(value: str) -> bool:
    directives = {d.split("=", 1)[0].strip().lower() for d in cc_delim_re.split(value) if d}
    return "no-store" in directives or {"private", "no-cache"} <= directives
