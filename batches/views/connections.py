"""The connections a person may use, how each is doing, and for admins its settings and a
Test connection button. The pages read the local database only; the test is the one upstream
call, made when an admin presses the button."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from .. import roles
from ..models import Batch, BatchTally, Connection, SyncState, WebhookRefusals
from ..services import connections as connection_services
from ..services import webhooks as webhook_services
from .access import rule
from .capacity import connection_panel as capacity_panel
from .lookups import connection_for

MANAGE_PERMISSION = "batches.change_connection"


@dataclass
class ConnectionRow:
    """One connection with what its pages show beside it."""

    connection: Connection
    state: SyncState | None
    batch_count: int
    has_key: bool

    @property
    def is_failing(self) -> bool:
        return self.state is not None and self.state.is_failing

    @property
    def last_success_at(self) -> Any:
        return self.state.last_success_at if self.state else None

    @property
    def status(self) -> str:
        """One word or two for the state, always shown as words (colour only adds)."""
        if not self.connection.enabled:
            return "disabled"
        if not self.has_key:
            return "no key"
        if self.is_failing:
            return "failing"
        if self.last_success_at is None:
            return "not synced yet"
        return "working"

    @property
    def status_css(self) -> str:
        return {
            "disabled": "cancelled",
            "no key": "warning",
            "failing": "failed",
            "not synced yet": "cancelled",
            "working": "completed",
        }[self.status]


def _rows(connections: list[Connection]) -> list[ConnectionRow]:
    ids = [c.pk for c in connections]
    states = {s.connection_id: s for s in SyncState.objects.filter(connection_id__in=ids)}
    # The tallies the batch list keeps: a count per connection without counting batches.
    counts = dict(
        BatchTally.objects.filter(connection_id__in=ids)
        .order_by()
        .values("connection_id")
        .annotate(n=Sum("count"))
        .values_list("connection_id", "n")
    )
    return [
        ConnectionRow(
            connection=c,
            state=states.get(c.pk),
            batch_count=counts.get(c.pk) or 0,
            has_key=c.has_key(),
        )
        for c in connections
    ]


def _can_manage(user: Any) -> bool:
    return user.has_perm(MANAGE_PERMISSION)


@rule(roles.VIEW)
@require_GET
def connection_list(request: HttpRequest) -> HttpResponse:
    rows = _rows(Connection.objects.listed_to(request.user))
    return render(
        request,
        "batches/connections/list.html",
        {"rows": rows, "can_manage": _can_manage(request.user)},
    )


@rule(roles.VIEW)
@require_GET
def connection_detail(request: HttpRequest, slug: str) -> HttpResponse:
    connection = connection_for(request.user, slug)
    return _detail(request, connection)


@rule(roles.MANAGE_CONNECTIONS)
@require_POST
def connection_test(request: HttpRequest, slug: str) -> HttpResponse:
    connection = connection_for(request.user, slug)
    result = connection_services.connection_test(connection=connection)
    return _detail(request, connection, result=result)


def _detail(
    request: HttpRequest,
    connection: Connection,
    *,
    result: connection_services.ConnectionTestResult | None = None,
) -> HttpResponse:
    can_manage = _can_manage(request.user)
    context: dict[str, Any] = {
        "connection": connection,
        "row": _rows([connection])[0],
        "can_manage": can_manage,
        "result": result,
        "closed": connection.restricted_to_no_group(),
    }
    context.update(capacity_panel(connection=connection, user=request.user))
    if can_manage:
        low, high = connection.expiry_hours()
        context.update(
            groups=list(connection.groups.all()),
            limits={
                "requests": connection.request_limit(),
                "bytes": connection.byte_limit(),
                "endpoints": connection.endpoints(),
                "expiry_min_seconds": low * 3600,
                "expiry_max_seconds": high * 3600,
                "deployments": sorted((connection.deployments or {}).items()),
            },
            webhook=_webhook_facts(request, connection),
        )
    return render(request, "batches/connections/detail.html", context)


WEBHOOK_DELIVERIES_SHOWN = 10


def _webhook_facts(request: HttpRequest, connection: Connection) -> dict[str, Any]:
    """The URL to register with OpenAI, where the secret comes from (its last 4 characters at
    most), why deliveries would be refused outright, the latest deliveries, each with
    whether its batch is cached here (to link it), and the count of unverified ones refused."""
    deliveries = list(connection.webhook_deliveries.all()[:WEBHOOK_DELIVERIES_SHOWN])
    named = {d.batch_openai_id for d in deliveries if d.batch_openai_id}
    cached = set(
        Batch.objects.filter(connection=connection, openai_id__in=named).values_list(
            "openai_id", flat=True
        )
    )
    problem = webhook_services.webhook_endpoint_problem(connection)
    return {
        "url": request.build_absolute_uri(reverse("openai-webhook", args=[connection.slug])),
        "secret_source": connection.webhook_secret_source(),
        "problem": problem.reason if problem else "",
        "deliveries": [(d, d.batch_openai_id in cached) for d in deliveries],
        # Refused before the signature was checked: counted, not listed (services/webhooks.py).
        "refusals": WebhookRefusals.objects.filter(connection=connection).first(),
    }
