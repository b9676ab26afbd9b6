"""What guards both ways of signing in: django-axes' throttle (the backend first in
AUTHENTICATION_BACKENDS, and when its lockout ends) and the client's address sign-ins are
counted by and audited from."""

from __future__ import annotations

import datetime as dt
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.db.models import Max, Sum
from django.http import HttpRequest


class ThrottleBackend(AxesStandaloneBackend):
    """django-axes' gate (first in AUTHENTICATION_BACKENDS): refuses an account or address with
    too many recent failures, and marks the request so its audit entry says why."""

    def authenticate(
        self,
        request: HttpRequest,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            return super().authenticate(request, username, password, **kwargs)
        except AxesBackendPermissionDenied:
            request.bw_locked_out = True
            raise


def client_address(request: HttpRequest) -> str:
    """The address sign-ins are counted by (AXES_CLIENT_IP_CALLABLE) and audited from. Behind a
    proxy (DJANGO_BEHIND_PROXY=true) the last X-Forwarded-For entry, the one our proxy added;
    earlier entries are the client's to invent."""
    if settings.SECURE_PROXY_SSL_HEADER:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()[:64]
    return str(request.META.get("REMOTE_ADDR") or "")[:64]


def locked_until(request: HttpRequest, username: str | None) -> dt.datetime | None:
    """When the lockout that refuses this account or address ends, or None if none does."""
    credentials = {settings.AXES_USERNAME_FORM_FIELD: username} if username else None
    cool_off = get_cool_off(request)
    if cool_off is None:
        return None
    limit = get_failure_limit(request, credentials)
    ends = []
    for attempts in AxesDatabaseHandler().get_user_attempts(request, credentials):
        seen = attempts.aggregate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
        if (seen["failures"] or 0) >= limit and seen["last"]:
            ends.append(seen["last"] + cool_off)
    return max(ends) if ends else None
