"""`/healthz`: for load balancers and monitors, no sign-in.

200 when the database answers, with how many enabled connections there are, how many are
late (no successful sync pass for LATE_SECONDS, or never) and how many are failing; 503 when
it does not. Anonymous answers name no connection: the slugs are what a stranger needs to
aim at a connection's webhook URL, and a restricted connection's name is not theirs to know.
The ages per connection (`workers`) are for a monitor that sends `Authorization: Bearer
<BATCHWEB_HEALTH_TOKEN>` (compared in constant time) or for a signed-in Admin.

One query for anyone (a signed-in Admin's session and groups aside), no session started or
written, nothing cached on the way. A stale worker does not make it fail: the web process can
still serve every page from the cache, so a load balancer should keep sending people to it; a
monitor alerts on `late` instead (docs/production.md, "Health check").
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from .. import roles
from ..models import Connection

logger = logging.getLogger(__name__)


def late_seconds() -> int:
    """A connection is late after this long without a successful pass: 5 minutes, or 30 sync
    intervals when the interval is set longer."""
    return max(300, round(30 * settings.SYNC_INTERVAL_SECONDS))


def _age(now, then) -> int | None:
    return None if then is None else max(0, round((now - then).total_seconds()))


def _may_see_names(request: HttpRequest) -> bool:
    """A monitoring token, or a signed-in Admin. Without a session cookie the session is not
    even looked at (nothing read, nothing started)."""
    expected = settings.HEALTH_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if expected and scheme.lower() == "bearer" and given:
        return hmac.compare_digest(given.encode(), expected.encode())
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False
    return roles.is_admin(request.user)


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        rows = list(
            Connection.objects.filter(enabled=True)
            .order_by("slug")
            .values_list(
                "slug",
                "sync_state__last_success_at",
                "sync_state__last_sync_at",
                "sync_state__failing_since",
            )
        )
    except DatabaseError as error:
        # The class only: a driver's message may name the host, user or database.
        logger.error("health check: the database did not answer (%s)", type(error).__name__)
        response = JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    else:
        now = timezone.now()
        late = late_seconds()
        body = {
            "status": "ok",
            "database": "ok",
            "connections": len(rows),
            "late": sum(1 for _, ok, _, _ in rows if ok is None or _age(now, ok) > late),
            "failing": sum(1 for *_, failing in rows if failing is not None),
        }
        if _may_see_names(request):
            body["workers"] = {
                slug: {
                    "last_pass_age_seconds": _age(now, success),
                    "last_attempt_age_seconds": _age(now, attempt),
                    "failing_for_seconds": _age(now, failing),
                }
                for slug, success, attempt, failing in rows
            }
        response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response
