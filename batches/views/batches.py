"""The list, a batch's page, cancel, sync now and the activity log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import connections, router
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.http import ConditionalGetMiddleware
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.decorators import decorator_from_middleware
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import roles
from ..cache import pages, tallies
from ..cache.rows import LIST_COLUMNS, page_rows
from ..forms import BatchFilterForm, LabelForm
from ..jsonl_check import ENDPOINTS
from ..models import (
    STATUS_TABS,
    Batch,
    Connection,
    ListFilters,
    Status,
    SyncState,
    tab_totals,
)
from ..models.batches import TERMINAL_STATUSES
from ..models.stored import stored_values
from ..results import ResultSummary
from ..services import batches as batch_services
from ..services import connections as connection_services
from ..services import estimates, result_files, sync
from ..templatetags.batchweb import list_url
from .access import rule
from .capacity import batch_panel as capacity_batch_panel
from .failures import shown
from .health import late_seconds
from .lookups import batch_for, batch_state_for

PAGE_SIZE = 50
# The label filter offers at most this many labels (the search box finds the rest).
LABEL_CHOICES = 200


@rule(roles.VIEW)
@require_GET
def batch_list(request: HttpRequest) -> HttpResponse:
    return pages.framed(
        request,
        body_template="batches/list.html",
        context=lambda: _list_context(request),
        title="Batches",
    )


def _list_context(request: HttpRequest) -> dict[str, Any]:
    user, filters = request.user, _filters(request)
    totals = tab_totals(tallies.tab_counts(user, filters))
    tabs = [
        {"key": key, "label": title, "count": totals[key], "active": key == filters.status}
        for key, title, _statuses in STATUS_TABS
    ]
    # The rows as values: a row the cache has costs no model object (batches/cache/rows.py).
    page = Batch.objects.listed(user, filters).keyset_page(
        after=_int_param(request, "after"),
        before=_int_param(request, "before"),
        size=PAGE_SIZE,
        columns=LIST_COLUMNS,
    )
    params = filters.params()
    live = [(r["id"], r["status"]) for r in page.batches if r["status"] not in TERMINAL_STATUSES]
    kept = tallies.of(user, filters.connection)  # the filters' choices
    connections = Connection.objects.listed_to(user)
    show_connection = len(connections) > 1
    access = Connection.objects.visible_to(user)
    return {
        "batches": page.batches,
        "rows": page_rows(page.batches, access=access, show_connection=show_connection),
        "tabs": tabs,
        "params": params,
        "newer_url": _page_url(params, before=page.newer) if page.newer else None,
        "older_url": _page_url(params, after=page.older) if page.older else None,
        "export_url": reverse("batch-export") + _page_url(params),
        "endpoints": ENDPOINTS,
        "models": sorted(kept.models),
        "creators": tallies.creator_names(user, kept.creator_ids),
        "connections": connections,
        "show_connection": show_connection,
        "labels": Batch.objects.label_choices(
            user, connection=filters.connection, limit=LABEL_CHOICES
        ),
        "filtered": bool(params),
        "live_ids": _live_ids(live),
        "poll_seconds": settings.LIVE_POLL_SECONDS,
    }


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


def _live_ids(rows: list[tuple[int, str]]) -> str:
    """The running rows a page keeps up to date (id, status), with the status it last showed
    for each."""
    return ",".join(f"{pk}:{status}" for pk, status in rows)


@rule(roles.VIEW)
@require_GET
@live_poll
def batch_rows_live(request: HttpRequest) -> HttpResponse:
    """Fresh copies of the list's running rows, from the cache, swapped in place by htmx. Rows
    that finished are sent one last time and then no longer asked for. The rows are kept by
    batches/cache/pages.py (an open list asks every few seconds); the freshness line is drawn
    each time."""
    return pages.framed(
        request,
        body_template="batches/includes/rows_live.html",
        context=lambda: _live_rows_context(request),
        frame_template="batches/includes/rows_live_framed.html",
        refresh_url=list_url(request.GET.get("back", "")),  # the list as the person filtered it
    )


def _live_rows_context(request: HttpRequest) -> dict[str, Any]:
    seen: dict[int, str] = {}
    for item in request.GET.get("ids", "").split(",")[:PAGE_SIZE]:
        pk, _, status = item.partition(":")
        if pk.isascii() and pk.isdigit() and len(pk) < 19:  # a row id, not "²" or 10**30
            seen[int(pk)] = status
    user = request.user
    visible = Batch.objects.visible_to(user).filter(pk__in=seen)
    rows = stored_values(visible.order_by("-created_at", "-id"), LIST_COLUMNS)
    changed = [row["id"] for row in rows if seen[row["id"]] != row["status"]]
    announcements = [
        f"{b.openai_id} is now {b.display_status()}"
        for b in visible.filter(pk__in=changed).order_by("-created_at", "-id").only(
            "openai_id", "status", "request_total", "request_completed", "request_failed"
        )
    ] if changed else []  # fmt: skip
    show_connection = len(Connection.objects.listed_to(user)) > 1
    access = Connection.objects.visible_to(user)
    return {
        "rows": page_rows(rows, access=access, show_connection=show_connection, oob=True),
        "live_ids": _live_ids(
            [(r["id"], r["status"]) for r in rows if r["status"] not in TERMINAL_STATUSES]
        ),
        "poll_seconds": settings.LIVE_POLL_SECONDS,
        "announcements": announcements,
        "show_connection": show_connection,
    }


@rule(roles.VIEW)
@require_GET
@live_poll
def batch_live(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    """The progress, counts, finish estimate and timeline of a running batch, from the cache,
    for htmx to swap in every few seconds; each poll asks the worker for a refresh as opening
    the page does. Once the batch has ended, the page is reloaded (once: the finished page
    does not poll) to show its results, downloads and retry."""
    pk, ended, connection_id = batch_state_for(request.user, slug, openai_id)
    worker = None if ended else _worker_state(connection_id)
    if worker is not None and worker.syncs:
        sync.batch_refresh_soon(batch_id=pk)
    response = pages.framed(
        request,
        body_template="batches/detail_live_response.html",
        context=lambda: _live_detail_context(request, slug, openai_id, worker),
        frame_template="batches/detail_live_framed.html",
        refresh_url=reverse("batch-detail", args=[slug, openai_id]),
        vary=(pk, worker),
        about=[connection_id],
    )
    if ended:
        response["HX-Refresh"] = "true"
    return response


def _live_detail_context(
    request: HttpRequest, slug: str, openai_id: str, worker: WorkerState | None
) -> dict[str, Any]:
    batch = batch_for(request.user, slug, openai_id)
    seen = request.GET.get("seen", "")
    changed = bool(seen) and seen != batch.status
    batch.eta = estimates.batch_eta(batch=batch)  # finish-time estimate
    return {
        "batch": batch,
        "worker": worker,
        "poll_seconds": settings.LIVE_POLL_SECONDS,
        "announcement": f"Status: {batch.display_status()}" if changed else "",
    }


@dataclass(frozen=True)
class WorkerState:
    """What a running batch's page says about the worker that keeps it fresh: "ok", "failing"
    (upstream fails; the worker backs off), "late" (no successful pass for health's
    late_seconds()), "never" (no pass yet) or "off" (the connection is disabled or has no
    key: the worker skips it). `since`: when it started failing, or the last successful pass.
    Part of the page's cache key, so it holds nothing that moves while nothing changes."""

    state: str
    since: dt.datetime | None = None

    @property
    def syncs(self) -> bool:
        """Whether the worker may fetch the connection's batches (so asking makes sense)."""
        return self.state != "off"


def _worker_state(connection_id: int) -> WorkerState:
    """The connection's switch and its sync state, in one query of its own SQL: a running
    batch's page asks on every load, also when served from the cache, where the ORM's
    compiling would cost ten times the query."""
    alias = router.db_for_read(Connection)
    quote = connections[alias].ops.quote_name
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT c.enabled, c.from_settings, s.last_success_at, s.failing_since"  # noqa: S608
            f" FROM {quote(Connection._meta.db_table)} c"
            f" LEFT JOIN {quote(SyncState._meta.db_table)} s ON s.connection_id = c.id"
            " WHERE c.id = %s",
            [connection_id],
        )
        found = cursor.fetchone()
    if found is None:
        return WorkerState("off")
    enabled, from_settings, last_success_at, failing_since = found
    if not enabled or (from_settings and not settings.OPENAI_API_KEY):
        return WorkerState("off")
    if failing_since is not None:
        return WorkerState("failing", _aware(failing_since))
    if last_success_at is None:
        return WorkerState("never")
    last_success_at = _aware(last_success_at)
    if (timezone.now() - last_success_at).total_seconds() > late_seconds():
        return WorkerState("late", last_success_at)
    return WorkerState("ok")


def _aware(value: dt.datetime) -> dt.datetime:
    """A datetime read in SQL of its own: SQLite gives it naive, in UTC."""
    return value if timezone.is_aware(value) else value.replace(tzinfo=dt.UTC)


@rule(roles.VIEW)
@require_GET
def batch_export(request: HttpRequest) -> StreamingHttpResponse:
    """The list as CSV, with the same filters as the page, streamed row by row."""
    rows = Batch.objects.listed(request.user, _filters(request))
    response = StreamingHttpResponse(
        result_files.batches_csv(rows.order_by("-created_at", "-id")),
        content_type="text/csv; charset=utf-8",
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="batches-{stamp}.csv"'
    return response


def _filters(request: HttpRequest) -> ListFilters:
    return BatchFilterForm(request.GET).filters()


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
    """A batch's page, from the cache only: a running batch's page asks the worker to fetch
    it again soon (sync.batch_refresh_soon: at most once per DETAIL_REFRESH_SECONDS per
    batch), says how fresh it is, and updates in place (batch_live) until the batch ends."""
    pk, ended, connection_id = batch_state_for(request.user, slug, openai_id)
    worker = None if ended else _worker_state(connection_id)
    if worker is not None and worker.syncs:
        sync.batch_refresh_soon(batch_id=pk)
    return pages.framed(
        request,
        body_template="batches/detail.html",
        context=lambda: _detail_context(request, batch_for(request.user, slug, openai_id), worker),
        title=openai_id,
        vary=(pk, worker),
        about=[connection_id],
    )


# The fields of a batch's events and retries its page shows (templates/batches/detail.html),
# and the key back to the batch, which Django's related manager reads on each row.
EVENT_SHOWN = ("at", "action", "detail", "batch", "user__username")
RETRY_SHOWN = (
    "retry_of",
    "openai_id",
    "status",
    "request_total",
    "request_completed",
    "request_failed",
    "created_at",
    "connection__slug",
    "created_by__username",
)


def _detail_context(request: HttpRequest, batch: Batch, worker: WorkerState | None) -> dict:
    summary = ResultSummary.from_dict(batch.result_summary) if batch.result_summary else None
    batch.eta = estimates.batch_eta(batch=batch)  # finish-time estimate
    may_submit = request.user.has_perm("batches.submit_batch")
    return {
        "batch": batch,
        "poll_seconds": settings.LIVE_POLL_SECONDS,
        "summary": summary,
        "worker": worker,
        # What the page shows of each, and no more: a query of every column of two models
        # costs more to build than to run (the page is drawn after every write to the batch).
        "events": batch.events.select_related("user").only(*EVENT_SHOWN)[:50],
        "retries": batch.retries.select_related("connection", "created_by").only(*RETRY_SHOWN),
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
    with shown(request, "The batch was not cancelled."):
        batch_services.batch_cancel(
            batch=batch,
            user=request.user,
            client=connection_services.get_client(connection=batch.connection, interactive=True),
        )
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
    batch = batch_services.batch_label(
        batch=batch, user=request.user, label=form.cleaned_data["label"]
    )
    messages.success(request, f"Label set to “{batch.label}”." if batch.label else "Label removed.")
    return redirect(batch)


@rule(roles.SYNC)
@require_POST
def sync_now(request: HttpRequest) -> HttpResponse:
    """Sync the connections the person may see (or the one named), each bounded: a person is
    waiting, and the rest of a long list is the worker's job."""
    connections = [c for c in Connection.objects.listed_to(request.user) if c.enabled]
    chosen = request.POST.get("connection", "")
    if chosen:
        connections = [c for c in connections if c.slug == chosen]
    connections = [c for c in connections if not (c.from_settings and not c.has_key())]
    for connection in connections:
        prefix = f"{connection.name}: " if len(connections) > 1 else ""
        with shown(request, f"{prefix}Sync failed; the list shows what was cached before."):
            result = sync.sync_now(connection=connection, user=request.user)
            text = (
                f"{prefix}Synced: {result.created} new, {result.updated} changed, "
                f"{result.refreshed} running {'batch' if result.refreshed == 1 else 'batches'} "
                "refreshed."
            )
            if result.stopped_because.startswith("page cap"):
                pages = result.pages * 100
                text += f" The newest {pages:,} were read; the worker fetches the rest."
            messages.success(request, text)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("batch-list")
    return redirect(target)
