"""Thin views: read the cache, validate a form, call one service, redirect with a message."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required, permission_required
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import services
from .forms import BatchCreateForm, BatchFilterForm
from .jsonl_check import ENDPOINTS
from .models import RUNNING_STATUSES, Batch, Event, Status, Submission
from .openai_client import OpenAIError

PAGE_SIZE = 50

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


def _get_batch(openai_id: str) -> Batch:
    return get_object_or_404(Batch.objects.select_related("created_by"), openai_id=openai_id)


@login_required
@require_GET
def batch_list(request: HttpRequest) -> HttpResponse:
    form = BatchFilterForm(request.GET)
    form.is_valid()
    filters = form.cleaned_data if form.is_valid() else {}
    base = Batch.objects.for_list()
    if filters.get("endpoint"):
        base = base.filter(endpoint=filters["endpoint"])
    if filters.get("model"):
        base = base.filter(model=filters["model"])
    if filters.get("creator"):
        base = base.filter(created_by__username=filters["creator"])
    base = base.search(filters.get("q", ""))

    counts = base.status_counts()
    tabs = []
    status = filters.get("status", "")
    rows = base
    for key, label, statuses in STATUS_TABS:
        total = sum(n for s, n in counts.items() if statuses is None or s in statuses)
        tabs.append({"key": key, "label": label, "count": total, "active": key == status})
        if key and key == status:
            rows = rows.filter(status__in=statuses)
    if status in Status.values:
        rows = rows.filter(status=status)

    page, newer, older = _keyset_page(request, rows)
    params = {k: v for k, v in filters.items() if v}
    context = {
        "form": form,
        "batches": page,
        "tabs": tabs,
        "params": params,
        "newer_url": _page_url(params, before=newer) if newer else None,
        "older_url": _page_url(params, after=older) if older else None,
        "endpoints": ENDPOINTS,
        "models": _distinct_models(),
        "creators": get_user_model()
        .objects.filter(batches__isnull=False)
        .distinct()
        .order_by("username")
        .values_list("username", flat=True),
        "filtered": bool(params),
    }
    return render(request, "batches/list.html", context)


def _distinct_models() -> list[str]:
    return list(
        Batch.objects.exclude(model="").order_by("model").values_list("model", flat=True).distinct()
    )


def _keyset_page(request: HttpRequest, rows: Any) -> tuple[list[Batch], int | None, int | None]:
    """Newest first, PAGE_SIZE at a time, by (created_at, id) so deep pages stay cheap."""
    after = _int_param(request, "after")
    before = _int_param(request, "before")
    if after and (anchor := Batch.objects.filter(pk=after).values("created_at").first()):
        rows = rows.filter(
            Q(created_at__lt=anchor["created_at"])
            | Q(created_at=anchor["created_at"], id__lt=after)
        )
        page = list(rows.order_by("-created_at", "-id")[: PAGE_SIZE + 1])
        has_older, has_newer = len(page) > PAGE_SIZE, True
        page = page[:PAGE_SIZE]
    elif before and (anchor := Batch.objects.filter(pk=before).values("created_at").first()):
        rows = rows.filter(
            Q(created_at__gt=anchor["created_at"])
            | Q(created_at=anchor["created_at"], id__gt=before)
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


@login_required
@require_GET
def batch_detail(request: HttpRequest, openai_id: str) -> HttpResponse:
    batch = _get_batch(openai_id)
    refresh_error = None
    if not batch.is_terminal:
        try:
            batch = services.batch_refresh(
                batch=batch, client=services.get_client(interactive=True)
            )
        except OpenAIError as error:
            refresh_error = str(error)
    context = {
        "batch": batch,
        "refresh_error": refresh_error,
        "events": batch.events.select_related("user")[:50],
        "can_cancel": batch.can_cancel and request.user.has_perm("batches.cancel_batch"),
    }
    return render(request, "batches/detail.html", context)


@login_required
@permission_required("batches.cancel_batch", raise_exception=True)
@require_http_methods(["GET", "POST"])
def batch_cancel(request: HttpRequest, openai_id: str) -> HttpResponse:
    batch = _get_batch(openai_id)
    if request.method == "GET":
        return render(request, "batches/cancel_confirm.html", {"batch": batch})
    try:
        services.batch_cancel(
            batch=batch, user=request.user, client=services.get_client(interactive=True)
        )
    except services.ServiceError as error:
        messages.error(request, str(error))
    except OpenAIError as error:
        messages.error(request, f"The batch was not cancelled. {error}")
    else:
        messages.success(
            request, "Cancellation requested. Requests already finished keep their results."
        )
    return redirect("batch-detail", openai_id=batch.openai_id)


@login_required
@permission_required("batches.submit_batch", raise_exception=True)
@require_http_methods(["GET", "POST"])
def batch_create(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        initial = {"submission_token": services.new_submission_token(), "completion_window": "24h"}
        endpoint = request.GET.get("endpoint")
        if endpoint in ENDPOINTS:
            initial["endpoint"] = endpoint
        form = BatchCreateForm(initial=initial)
        return render(request, "batches/create.html", {"form": form})

    form = BatchCreateForm(request.POST)
    if not form.is_valid():
        return render(request, "batches/create.html", {"form": form}, status=400)
    data = form.cleaned_data
    submission, claimed = _claim_submission(data["submission_token"], request.user)
    if not claimed:
        return _already_submitted(request, submission)
    try:
        batch = services.batch_create(
            user=request.user,
            input_file_id=data["input_file_id"],
            endpoint=data["endpoint"],
            completion_window=data["completion_window"],
            metadata=data["metadata"],
            output_expires_after_seconds=data["output_expires_after_seconds"],
            submission_token=submission.token,
        )
    except (OpenAIError, services.ServiceError) as error:
        submission.state, submission.error = Submission.State.FAILED, str(error)
        submission.save(update_fields=["state", "error", "updated_at"])
        form.add_error(None, f"The batch was not created. {error}")
        return render(request, "batches/create.html", {"form": form}, status=502)
    submission.state, submission.batch = Submission.State.DONE, batch
    submission.save(update_fields=["state", "batch", "updated_at"])
    messages.success(request, f"Batch {batch.openai_id} created.")
    return redirect("batch-detail", openai_id=batch.openai_id)


def _claim_submission(token: str, user: Any) -> tuple[Submission, bool]:
    """Take the form's one-time token. Only one request at a time may act on a token."""
    try:
        with transaction.atomic():
            return Submission.objects.create(token=token, user=user), True
    except IntegrityError:
        pass
    submission = Submission.objects.get(token=token)
    if submission.state == Submission.State.FAILED:
        # A failed attempt may be tried again with the same form: claim it back atomically.
        claimed = Submission.objects.filter(pk=submission.pk, state=Submission.State.FAILED).update(
            state=Submission.State.PENDING
        )
        submission.refresh_from_db()
        return submission, bool(claimed)
    return submission, False


def _already_submitted(request: HttpRequest, submission: Submission) -> HttpResponse:
    if submission.state == Submission.State.DONE and submission.batch_id:
        messages.info(request, "This form was already submitted; here is the batch it created.")
        return redirect("batch-detail", openai_id=submission.batch.openai_id)
    messages.warning(
        request,
        "This form is already being submitted. The batch will appear in the list in a moment.",
    )
    return redirect("batch-list")


@login_required
@require_POST
def sync_now(request: HttpRequest) -> HttpResponse:
    try:
        result = services.batches_sync(client=services.get_client(interactive=True))
    except OpenAIError as error:
        messages.error(request, f"Sync failed; the list shows what was cached before. {error}")
    else:
        messages.success(
            request,
            f"Synced: {result.created} new, {result.updated} changed, "
            f"{result.refreshed} running batches refreshed.",
        )
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("batch-list")
    return redirect(target)


@login_required
@require_GET
def activity(request: HttpRequest) -> HttpResponse:
    events = Event.objects.select_related("user", "batch")
    user = request.GET.get("user", "")
    if user:
        events = events.filter(user__username=user)
    return render(request, "batches/activity.html", {"events": events[:200], "user_filter": user})
