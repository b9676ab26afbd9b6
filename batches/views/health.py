"""`/healthz`: for load balancers and monitors, no sign-in.

200 when the database answers, with the age of each enabled connection's last successful sync
pass; 503 when it does not. One query, no session, nothing cached on the way. A stale worker
does not make it fail: the web process can still serve every page from the cache, so a load
balancer should keep sending people to it; a monitor alerts on the ages instead (README,
"Running in production").
"""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from ..models import Connection

logger = logging.getLogger(__name__)


def _age(now, then) -> int | None:
    return None if then is None else max(0, round((now - then).total_seconds()))


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
        workers = {
            slug: {
                "last_pass_age_seconds": _age(now, success),
                "last_attempt_age_seconds": _age(now, attempt),
                "failing_for_seconds": _age(now, failing),
            }
            for slug, success, attempt, failing in rows
        }
        response = JsonResponse({"status": "ok", "database": "ok", "workers": workers})
    response["Cache-Control"] = "no-store"
    return response
