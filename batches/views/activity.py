"""The Activity page (the audit trail), filtered, a cursor page at a time, and its CSV."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from .. import roles
from ..models import Connection, Event
from ..services import audit
from .access import rule

PAGE_SIZE = 100


class ActivityFilterForm(forms.Form):
    user = forms.CharField(required=False, max_length=150, label="Person")
    action = forms.ChoiceField(
        required=False, choices=[("", "any"), *Event.Action.choices], label="Action"
    )
    connection = forms.SlugField(required=False, max_length=50, label="Connection")
    batch = forms.CharField(required=False, max_length=128, label="Batch id")
    since = forms.DateField(required=False, label="From", widget=forms.DateInput({"type": "date"}))
    until = forms.DateField(
        required=False, label="Until (inclusive)", widget=forms.DateInput({"type": "date"})
    )

    def filters(self) -> audit.EventFilters:
        data = self.cleaned_data if self.is_valid() else {}
        return audit.EventFilters(
            username=(data.get("user") or "").strip(),
            action=data.get("action") or "",
            connection=data.get("connection") or "",
            batch=(data.get("batch") or "").strip(),
            since=_day_start(data.get("since")),
            until=_day_start(data.get("until"), days=1),
        )


def _day_start(day: dt.date | None, days: int = 0) -> dt.datetime | None:
    if day is None:
        return None
    try:
        day += dt.timedelta(days=days)
    except OverflowError:  # "until 31 December 9999": there is no day after, so no end
        return None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _cursor(request: HttpRequest) -> tuple[dt.datetime, int] | None:
    """`before=<iso time>~<id>`: the last entry of the previous page."""
    at, _, pk = request.GET.get("before", "").partition("~")
    try:
        when = dt.datetime.fromisoformat(at)
        return (when if timezone.is_aware(when) else when.replace(tzinfo=dt.UTC), int(pk))
    except ValueError:
        return None


@rule(roles.VIEW)
@require_GET
def activity(request: HttpRequest) -> HttpResponse:
    form = ActivityFilterForm(request.GET)
    filters = form.filters()
    access = Connection.objects.visible_to(request.user)
    events = audit.events_for(access=access, filters=filters)
    page, more = audit.events_page(events, before=_cursor(request), size=PAGE_SIZE)
    params = {k: v for k, v in request.GET.items() if v and k != "before"}
    older = None
    if more and page:
        last = page[-1]
        older = "?" + urlencode({**params, "before": f"{last.at.isoformat()}~{last.pk}"})
    connections = Connection.objects.listed_to(request.user)
    context = {
        "form": form,
        "events": page,
        "rows": audit.events_shown(page, access=access),  # what of each entry this person sees
        "older_url": older,
        "first_url": "?" + urlencode(params) if "before" in request.GET else None,
        "export_url": "export.csv?" + urlencode(params),
        "filtered": bool(params),
        "connections": connections,
        "show_connection": len(connections) > 1,
        "chosen": filters,
    }
    return render(request, "batches/activity/activity.html", context)


@rule(roles.VIEW)
@require_GET
def activity_export(request: HttpRequest) -> StreamingHttpResponse:
    filters = ActivityFilterForm(request.GET).filters()
    access = Connection.objects.visible_to(request.user)
    events = audit.events_for(access=access, filters=filters)
    response = StreamingHttpResponse(
        audit.events_csv(events, access=access), content_type="text/csv; charset=utf-8"
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="activity-{stamp}.csv"'
    return response
