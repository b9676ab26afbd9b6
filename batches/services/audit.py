"""The audit trail: reading it (the Activity page and its CSV), and the entries for what
happens outside the batch services: signing in and out, and django-axes' lockouts (signals are
the one way to hear of these; company sign-in records its refusals itself)."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from axes.helpers import get_cool_off
from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from ..models import Access, Event, EventQuerySet
from .result_files import Echo, csv_safe
from .signin import client_address, locked_until


@dataclass(frozen=True)
class EventFilters:
    """What the Activity page is narrowed to; empty values mean no condition."""

    username: str = ""
    action: str = ""
    connection: str = ""  # a slug
    batch: str = ""  # a batch id
    since: dt.datetime | None = None
    until: dt.datetime | None = None


# Entries whose name and details only Admins see (`event_shown`): the name a failed sign-in
# tried is what was typed, often a password typed into the wrong box, and the details give the
# address it came from. Everyone else sees that a sign-in failed.
ADMIN_ONLY_DETAILS = frozenset({Event.Action.SIGN_IN_FAILED})


@dataclass(frozen=True)
class ShownEvent:
    """An entry as one person may see it: the Activity page and its CSV show these."""

    event: Event
    who: str  # the name shown
    person: str  # the name to filter by ("": none, no link)
    detail: str


def event_shown(*, event: Event, access: Access) -> ShownEvent:
    """The one place that decides what of an entry a person sees."""
    if event.action in ADMIN_ONLY_DETAILS and not access.admin:
        return ShownEvent(event=event, who="someone", person="", detail="sign-in failed")
    return ShownEvent(
        event=event,
        who=event.username or "batchweb",
        person=event.username,
        detail=event.detail,
    )


def events_for(*, access: Access, filters: EventFilters) -> EventQuerySet:
    """The entries a person may see (none about connections hidden from them), filtered,
    newest first. Filtering by a name finds no failed sign-in for a non-Admin: the filter
    would otherwise tell whether someone typed that name."""
    events = Event.objects.visible_to(access).select_related("batch__connection", "connection")
    if filters.username:
        events = events.filter(username=filters.username)
        if not access.admin:
            events = events.exclude(action__in=ADMIN_ONLY_DETAILS)
    if filters.action:
        events = events.filter(action=filters.action)
    if filters.connection:
        events = events.filter(connection__slug=filters.connection)
    if filters.batch:
        events = events.filter(batch_openai_id=filters.batch)
    if filters.since:
        events = events.filter(at__gte=filters.since)
    if filters.until:
        events = events.filter(at__lt=filters.until)
    return events.order_by("-at", "-id")


def events_page(
    events: EventQuerySet, *, before: tuple[dt.datetime, int] | None, size: int
) -> tuple[list[Event], bool]:
    """One page of entries older than the cursor (time, id), and whether there are more: a
    cursor, not an offset, so page 1,000 costs what page 1 does."""
    if before is not None:
        at, pk = before
        events = events.filter(Q(at__lt=at) | Q(at=at, id__lt=pk))
    rows = list(events[: size + 1])
    return rows[:size], len(rows) > size


def events_shown(events: list[Event], *, access: Access) -> list[ShownEvent]:
    return [event_shown(event=e, access=access) for e in events]


def events_csv(events: EventQuerySet, *, access: Access) -> Iterator[str]:
    writer = csv.writer(Echo())
    yield writer.writerow(
        ["at", "who", "action", "outcome", "connection", "batch_id", "target", "detail",
         "request_id"]
    )  # fmt: skip
    for e in events.iterator(chunk_size=2000):
        shown = event_shown(event=e, access=access)
        yield writer.writerow(
            [
                e.at.astimezone(dt.UTC).isoformat(), csv_safe(shown.who),
                e.get_action_display(), e.outcome,
                csv_safe(e.connection.name if e.connection else ""), csv_safe(e.batch_openai_id),
                csv_safe(e.target), csv_safe(shown.detail), csv_safe(e.request_id),
            ]
        )  # fmt: skip


def _client_address(request: HttpRequest | None) -> str:
    if request is None:
        return ""
    return client_address(request)


def _until(request: HttpRequest | None, username: str) -> str:
    until = locked_until(request, username) if request is not None else None
    return f" until {until:%H:%M} UTC" if until else ""


def audit_sign_in(*, sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    # Company sign-in adds which provider and the groups it gave.
    note = getattr(request, "bw_sign_in_note", "")
    detail = f"from {_client_address(request)}" + (f" {note}" if note else "")
    Event.record(Event.Action.SIGN_IN, user=user, detail=detail)


def audit_sign_out(*, sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        Event.record(Event.Action.SIGN_OUT, user=user, detail=f"from {_client_address(request)}")


def audit_sign_in_failed(
    *, sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # The credentials arrive with the password already masked by Django; only the name is kept.
    username = str(credentials.get("username") or "")[:150]
    detail = f"from {_client_address(request)}"
    if getattr(request, "bw_locked_out", False):  # refused by the throttle, password unchecked
        refused = f"{detail}; refused:"
        if _refusal_recorded(request, refused):
            return
        detail = f"{refused} too many failed sign-ins, locked{_until(request, username)}"
    Event.record(Event.Action.SIGN_IN_FAILED, username=username, detail=detail)


def _refusal_recorded(request: HttpRequest, prefix: str) -> bool:
    """Whether an attempt refused during this address's lockout is in the trail already: the
    first is, the rest are not. django-axes bounds the failures it counts (a few per address
    and lockout); this bounds the attempts it refuses unchecked, which it does not count, so
    a stranger cannot grow the trail without end (issue 19)."""
    entries = Event.objects.filter(action=Event.Action.SIGN_IN_FAILED, detail__startswith=prefix)
    cool_off = get_cool_off(request)  # None: locked until an admin unlocks
    if cool_off is not None:
        entries = entries.filter(at__gte=timezone.now() - cool_off)
    return entries.exists()


def audit_locked_out(
    *, sender: Any, request: HttpRequest | None, username: str | None, **kwargs: Any
) -> None:
    """django-axes locked an account or address: the failure that reached the limit."""
    if getattr(request, "bw_locked_out", False):
        return  # a refused attempt during the lockout: its failure entry says so
    username = str(username or "")[:150]
    Event.record(
        Event.Action.SIGN_IN_FAILED,
        username=username,
        detail=f"from {_client_address(request)}; locked out after {settings.AXES_FAILURE_LIMIT} "
        f"failed sign-ins{_until(request, username)}",
    )
