"""The list, a batch's page, cancel, sync now and the activity log."""

from __future__ import annotations

from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.http import ConditionalGetMiddleware
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.decorators import decorator_from_middleware
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import roles, services
from ..forms import BatchFilterForm, LabelForm
from ..jsonl_check import ENDPOINTS
from ..models import (
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    Batch,
    BatchQuerySet,
    BatchTally,
    Event,
    Status,
    access_for,
    label_choices,
)
from ..openai_client import OpenAIError
from ..results import ResultSummary
from ..services.result_files import batches_csv
from . import page_cache
from .access import rule
from .capacity import batch_panel as capacity_batch_panel
from .lookups import batch_for, batch_state_for
from .rows import rendered_rows

PAGE_SIZE = 50
# The label filter offers at most this many labels (the search box finds the rest).
LABEL_CHOICES = 200

STATUS_TABS = [
    ("", "All", None),
    ("running", "Running", RUNNING_STATUSES),
    ("completed", "Completed", {Status.COMPLETED}),
    ("failed", "Failed", {Status.FAILED}),
    ("expired", "Expired", {Status.EXPIRED}),
    # `cancelling` is still running (it may take 10 min): it counts under Running, so the tabs
    # partition All.
    ("cancelled", "Cancelled", {Status.CANCELLED}),
]


@rule(roles.VIEW)
@require_GET
def batch_list(request: HttpRequest) -> HttpResponse:
    return page_cache.framed(
        request,
        body_template="batches/list.html",
        context=lambda: _list_context(request),
        title="Batches",
    )


def _list_context(request: HttpRequest) -> dict[str, Any]:
    filters = _filters(request)
    scope = _Scope(request.user, filters)
    base = _filtered(filters, scope)
    counts = _status_counts(filters, base, scope)
    tabs = []
    status = filters.get("status", "")
    for key, label, statuses in STATUS_TABS:
        if key == "running":  # any status that is not an ending, even one batchweb does not know
            total = sum(n for s, n in counts.items() if s not in TERMINAL_STATUSES)
        else:
            total = sum(n for s, n in counts.items() if statuses is None or s in statuses)
        tabs.append({"key": key, "label": label, "count": total, "active": key == status})
    # Connections come from the scope, one object each, rather than joined into every row.
    rows = _with_status(base, status).select_related(None).select_related("created_by")
    page, newer, older = _keyset_page(request, rows)
    scope.attach_connections(page)
    params = {k: v for k, v in filters.items() if v}
    live = [b for b in page if not b.is_terminal]
    services.etas_attach(batches=live)  # finish-time estimates: one query for the whole page
    choices = scope.tallies().filter(count__gt=0)
    creator_ids = choices.exclude(creator_id=0).values_list("creator_id", flat=True).distinct()
    show_connection = len(scope.connections) > 1
    context = {
        "batches": page,
        "rows": rendered_rows(page, show_connection=show_connection),
        "tabs": tabs,
        "params": params,
        "newer_url": _page_url(params, before=newer) if newer else None,
        "older_url": _page_url(params, after=older) if older else None,
        "export_url": reverse("batch-export") + _page_url(params),
        "endpoints": ENDPOINTS,
        "models": choices.exclude(model="").order_by("model").values_list("model", flat=True)
        .distinct(),
        "creators": get_user_model().objects.filter(pk__in=list(creator_ids))
        .order_by("username").values_list("username", flat=True),
        "connections": scope.connections,
        "show_connection": show_connection,
        "labels": scope.labels(),
        "filtered": bool(params),
        "live_ids": _live_ids(live),
        "poll_seconds": settings.LIVE_POLL_SECONDS,
    }  # fmt: skip
    return context


def live_poll(view: Any) -> Any:
    """For what htmx asks every few seconds: an ETag of the answer, and 304 Not Modified
    (nothing to send, nothing to swap) when it is the one the browser already has. The
    browser asks again each time (no-cache) rather than reuse its copy unasked."""
    conditional = decorator_from_middleware(ConditionalGetMiddleware)(view)

    @wraps(view)
    def polled(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = conditional(request, *args, **kwargs)
        patch_cache_control(response, private=True, no_cache=True)
        return response

    return polled


def _live_ids(batches: list[Batch]) -> str:
    """The running rows a page keeps up to date, with the status it last showed for each."""
    return ",".join(f"{b.pk}:{b.status}" for b in batches)


@rule(roles.VIEW)
@require_GET
@live_poll
def batch_rows_live(request: HttpRequest) -> HttpResponse:
    """Fresh copies of the list's running rows, from the cache, swapped in place by htmx. Rows
    that finished are sent one last time and then no longer asked for. The rows are kept by
    page_cache (an open list asks every few seconds); the freshness line is drawn each time."""
    return page_cache.framed(
        request,
        body_template="batches/includes/rows_live.html",
        context=lambda: _live_rows_context(request),
        frame_template="batches/includes/rows_live_framed.html",
    )


def _live_rows_context(request: HttpRequest) -> dict[str, Any]:
    seen: dict[int, str] = {}
    for item in request.GET.get("ids", "").split(",")[:PAGE_SIZE]:
        pk, _, status = item.partition(":")
        if pk.isascii() and pk.isdigit() and len(pk) < 19:  # a row id, not "²" or 10**30
            seen[int(pk)] = status
    visible = Batch.objects.for_list().visible_to(request.user)
    batches = list(visible.filter(pk__in=seen).order_by("-created_at", "-id"))
    announcements = [
        f"{b.openai_id} is now {b.display_status()}" for b in batches if seen[b.pk] != b.status
    ]
    services.etas_attach(batches=batches)  # finish-time estimates: one query for all rows
    show_connection = len(services.connections_for(request.user)) > 1
    return {
        "batches": batches,
        "rows": rendered_rows(batches, show_connection=show_connection, oob=True),
        "live_ids": _live_ids([b for b in batches if not b.is_terminal]),
        "poll_seconds": settings.LIVE_POLL_SECONDS,
        "announcements": announcements,
        "show_connection": show_connection,
    }


@rule(roles.VIEW)
@require_GET
@live_poll
def batch_live(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    """The progress and timeline of a running batch, from the cache, for htmx to swap in."""
    batch = batch_for(request.user, slug, openai_id)
    seen = request.GET.get("seen", "")
    changed = bool(seen) and seen != batch.status
    batch.eta = services.batch_eta(batch=batch)  # finish-time estimate
    context = {
        "batch": batch,
        "poll_seconds": settings.LIVE_POLL_SECONDS,
        "announcement": f"Status: {batch.display_status()}" if changed else "",
    }
    response = render(request, "batches/detail_live_response.html", context)
    if changed and batch.is_terminal:
        # Finished: reload once, so the page shows the results, downloads and retry.
        response["HX-Refresh"] = "true"
    return response


@rule(roles.VIEW)
@require_GET
def batch_export(request: HttpRequest) -> StreamingHttpResponse:
    """The list as CSV, with the same filters as the page, streamed row by row."""
    filters = _filters(request)
    rows = _with_status(
        _filtered(filters, _Scope(request.user, filters)), filters.get("status", "")
    )
    response = StreamingHttpResponse(
        batches_csv(rows.order_by("-created_at", "-id")), content_type="text/csv; charset=utf-8"
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="batches-{stamp}.csv"'
    return response


def _filters(request: HttpRequest) -> dict[str, str]:
    """The list's filters; unknown or malformed values are ignored rather than failing."""
    form = BatchFilterForm(request.GET)
    return {k: v for k, v in form.cleaned_data.items() if v} if form.is_valid() else {}


class _Scope:
    """The connections a person may see, and the one the list is filtered to, if any."""

    def __init__(self, user: Any, filters: dict[str, str]) -> None:
        access = access_for(user)
        self.connections = services.connections_for(user)
        self.ids = access.ids
        self.everything = access.everything
        self.by_id = {c.pk: c for c in access.connections}
        slug = filters.get("connection")
        self.chosen = next((c for c in self.connections if c.slug == slug), None) if slug else None
        self.nothing = bool(slug) and self.chosen is None

    def batches(self) -> BatchQuerySet:
        rows = Batch.objects.for_list()
        if self.nothing:
            return rows.none()
        if self.chosen:
            return rows.filter(connection=self.chosen)
        return rows if self.everything else rows.filter(connection_id__in=self.ids)

    def attach_connections(self, batches: list[Batch]) -> None:
        for batch in batches:
            if batch.connection_id in self.by_id:
                batch.connection = self.by_id[batch.connection_id]

    def labels(self) -> list[str]:
        """The label filter's choices, in order."""
        if self.nothing:
            return []
        ids = [self.chosen.pk] if self.chosen else None if self.everything else list(self.ids)
        return label_choices(connection_ids=ids, limit=LABEL_CHOICES)

    def tallies(self) -> Any:
        if self.nothing:
            return BatchTally.objects.none()
        if self.chosen:
            return BatchTally.objects.filter(connection_id=self.chosen.pk)
        tallies = BatchTally.objects.all()
        return tallies if self.everything else tallies.filter(connection_id__in=self.ids)


def _filtered(filters: dict[str, str], scope: _Scope) -> BatchQuerySet:
    rows = scope.batches()
    if filters.get("endpoint"):
        rows = rows.filter(endpoint=filters["endpoint"])
    if filters.get("model"):
        rows = rows.filter(model=filters["model"])
    if filters.get("label"):
        rows = rows.filter(label=filters["label"])
    if filters.get("creator"):
        # By id, so the (created_by, created_at) index serves the page.
        creator = get_user_model().objects.filter(username=filters["creator"]).first()
        rows = rows.filter(created_by_id=creator.pk if creator else None).exclude(created_by=None)
    return rows.search(filters.get("q", ""))


def _with_status(rows: BatchQuerySet, status: str) -> BatchQuerySet:
    if status == "running":
        return rows.filter(running=True)
    for key, _label, statuses in STATUS_TABS:
        if key and key == status:
            return rows.filter(status__in=statuses)
    if status in Status.values:
        return rows.filter(status=status)
    return rows


def _status_counts(filters: dict[str, str], rows: BatchQuerySet, scope: _Scope) -> dict[str, int]:
    """Counts per status. Without a search they come from the tallies, whose size does not
    grow with the number of batches; a search has to count the rows it matches."""
    if filters.get("q"):
        return rows.status_counts()
    tallies = scope.tallies()
    if filters.get("endpoint"):
        tallies = tallies.filter(endpoint=filters["endpoint"])
    if filters.get("model"):
        tallies = tallies.filter(model=filters["model"])
    if filters.get("creator"):
        user = get_user_model().objects.filter(username=filters["creator"]).first()
        tallies = tallies.filter(creator_id=user.pk if user else -1)
    totals = tallies.values("status").annotate(n=Sum("count")).order_by()
    return {row["status"]: row["n"] for row in totals if row["n"]}


def _keyset_page(request: HttpRequest, rows: Any) -> tuple[list[Batch], int | None, int | None]:
    """Newest first, PAGE_SIZE at a time, by (created_at, id) so deep pages stay cheap."""
    after = _int_param(request, "after")
    before = _int_param(request, "before")
    # "(created_at, id) < anchor", written as a range on created_at so the index is used.
    if after and (anchor := Batch.objects.filter(pk=after).values("created_at").first()):
        rows = rows.filter(created_at__lte=anchor["created_at"]).exclude(
            created_at=anchor["created_at"], id__gte=after
        )
        page = list(rows.order_by("-created_at", "-id")[: PAGE_SIZE + 1])
        has_older, has_newer = len(page) > PAGE_SIZE, True
        page = page[:PAGE_SIZE]
    elif before and (anchor := Batch.objects.filter(pk=before).values("created_at").first()):
        rows = rows.filter(created_at__gte=anchor["created_at"]).exclude(
            created_at=anchor["created_at"], id__lte=before
        )
        page = list(rows.order_by("created_at", "id")[: PAGE_SIZE + 1])
        has_newer, has_older = len(page) > PAGE_SIZE, True
        page = page[:PAGE_SIZE][::-1]
    else:
        page = list(rows.order_by("-created_at", "-id")[: PAGE_SIZE + 1])
        has_older, has_newer = len(page) > PAGE_SIZE, False
        page = page[:PAGE_SIZE]
    if not page:
        return page, None, None
    return page, page[0].pk if has_newer else None, page[-1].pk if has_older else None


def _int_param(request: HttpRequest, name: str) -> int | None:
    try:
        return int(request.GET.get(name, ""))
    except ValueError:
        return None


def _page_url(params: dict[str, str], **cursor: int) -> str:
    return "?" + urlencode({**params, **cursor})


@rule(roles.VIEW)
@require_GET
def batch_detail(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    pk, ended, connection_id = batch_state_for(request.user, slug, openai_id)
    batch, refresh_error = None, None
    if not ended:  # asked upstream first: the page shows what it says now
        batch = batch_for(request.user, slug, openai_id)
        try:
            client = services.get_client(connection=batch.connection, interactive=True)
            batch = services.batch_refresh(batch=batch, client=client)
        except OpenAIError as error:
            refresh_error = str(error)
    return page_cache.framed(
        request,
        body_template="batches/detail.html",
        context=lambda: _detail_context(
            request, batch or batch_for(request.user, slug, openai_id), refresh_error
        ),
        title=openai_id,
        vary=(pk, refresh_error),
        about=[connection_id],
    )


def _detail_context(request: HttpRequest, batch: Batch, refresh_error: str | None) -> dict:
    summary = ResultSummary.from_dict(batch.result_summary) if batch.result_summary else None
    batch.eta = services.batch_eta(batch=batch)  # finish-time estimate
    may_submit = request.user.has_perm("batches.submit_batch")
    return {
        "batch": batch,
        "poll_seconds": settings.LIVE_POLL_SECONDS,
        "summary": summary,
        "refresh_error": refresh_error,
        "events": batch.events.select_related("user")[:50],
        "can_cancel": batch.can_cancel and roles.may_cancel(request.user, batch),
        "can_retry": may_submit and batch.is_terminal and bool(batch.input_file_id)
        and _has_unsucceeded(batch, summary),
        # Capacity: a batch that failed for lack of room, and its wait (None for the rest).
        "capacity": capacity_batch_panel(batch=batch, user=request.user),
    }  # fmt: skip


@rule(roles.VIEW)
@require_GET
def batch_legacy_redirect(request: HttpRequest, openai_id: str, rest: str = "") -> HttpResponse:
    """Links made before connections (/batches/<id>/...) still work: to the one batch with
    that id the person may see, or to a search when several connections have one."""
    found = list(
        Batch.objects.visible_to(request.user)
        .filter(openai_id=openai_id)
        .select_related("connection")[:2]
    )
    if not found:
        raise Http404("No such batch.")
    if len(found) > 1:
        return redirect(reverse("batch-list") + "?" + urlencode({"q": openai_id}))
    query = request.GET.urlencode()
    return redirect(found[0].get_absolute_url() + rest + ("?" + query if query else ""))


def _has_unsucceeded(batch: Batch, summary: ResultSummary | None) -> bool:
    if summary is not None:
        return bool(summary.failed or summary.never_ran)
    if batch.request_total is None:
        return batch.status != Status.COMPLETED
    return (batch.request_completed or 0) < batch.request_total


@rule(roles.CANCEL_OWN, roles.CANCEL_ANY)
@require_http_methods(["GET", "POST"])
def batch_cancel(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    batch = batch_for(request.user, slug, openai_id)
    if not roles.may_cancel(request.user, batch):
        raise PermissionDenied("Submitters cancel the batches they created; Operators any batch.")
    if request.method == "GET":
        return render(request, "batches/cancel_confirm.html", {"batch": batch})
    try:
        services.batch_cancel(
            batch=batch,
            user=request.user,
            client=services.get_client(connection=batch.connection, interactive=True),
        )
    except services.ServiceError as error:
        messages.error(request, str(error))
    except OpenAIError as error:
        messages.error(request, f"The batch was not cancelled. {error}")
    else:
        messages.success(
            request, "Cancellation requested. Requests already finished keep their results."
        )
    return redirect(batch)


@rule(roles.LABELS)
@require_POST
def batch_label(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    batch = batch_for(request.user, slug, openai_id)
    form = LabelForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The label was not changed: " + " ".join(form.errors["label"]))
        return redirect(batch)
    batch = services.batch_label(batch=batch, user=request.user, label=form.cleaned_data["label"])
    messages.success(request, f"Label set to “{batch.label}”." if batch.label else "Label removed.")
    return redirect(batch)


@rule(roles.SYNC)
@require_POST
def sync_now(request: HttpRequest) -> HttpResponse:
    """Sync the connections the person may see (or the one named), each bounded: a person is
    waiting, and the rest of a long list is the worker's job."""
    connections = [c for c in services.connections_for(request.user) if c.enabled]
    chosen = request.POST.get("connection", "")
    if chosen:
        connections = [c for c in connections if c.slug == chosen]
    connections = [c for c in connections if not (c.from_settings and not c.has_key())]
    for connection in connections:
        prefix = f"{connection.name}: " if len(connections) > 1 else ""
        try:
            result = services.batches_sync(
                connection=connection,
                client=services.get_client(connection=connection, interactive=True),
                max_pages=settings.SYNC_NOW_MAX_PAGES,
                refresh_limit=settings.SYNC_NOW_MAX_REFRESHES,
            )
        except OpenAIError as error:
            messages.error(
                request, f"{prefix}Sync failed; the list shows what was cached before. {error}"
            )
            Event.record(
                Event.Action.SYNC_FAILED, user=request.user, connection=connection, error=error
            )
            continue
        Event.record(
            Event.Action.SYNC,
            user=request.user,
            connection=connection,
            detail=f"{result.created} new, {result.updated} changed, {result.refreshed} refreshed",
        )
        text = (
            f"{prefix}Synced: {result.created} new, {result.updated} changed, "
            f"{result.refreshed} running {'batch' if result.refreshed == 1 else 'batches'} "
            "refreshed."
        )
        if result.stopped_because.startswith("page cap"):
            text += f" The newest {result.pages * 100:,} were read; the worker fetches the rest."
        messages.success(request, text)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("batch-list")
    return redirect(target)
