"""Capacity: submit a batch again when there is room, stop waiting, and what the batch page,
the confirm page and the connection page show of the enqueued-token estimate."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from .. import roles
from ..models import Batch, CapacityWait, Connection, Submission
from ..services import capacity
from .access import rule
from .failures import shown
from .lookups import batch_for, submission_for


@rule(roles.SUBMIT)
@require_POST
def batch_capacity_wait(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    """Submit a batch that failed for lack of room again, once the estimate leaves room."""
    batch = batch_for(request.user, slug, openai_id)
    _usable(request.user, batch.connection)
    with shown(request):
        wait = capacity.capacity_wait_for_batch(batch=batch, user=request.user)
        messages.success(request, _queued_message(wait))
    return redirect(batch)


@rule(roles.SUBMIT, roles.CANCEL_ANY)
@require_POST
def batch_capacity_cancel(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    batch = batch_for(request.user, slug, openai_id)
    _cancel(request, capacity.active_wait(batch=batch))
    return redirect(batch)


@rule(roles.SUBMIT)
@require_POST
def submission_capacity_wait(request: HttpRequest, token: str) -> HttpResponse:
    """The same, for a checked file whose create was refused for lack of room (Azure)."""
    submission = submission_for(request.user, token)
    _usable(request.user, submission.connection)
    with shown(request):
        wait = capacity.capacity_wait_for_submission(submission=submission, user=request.user)
        messages.success(request, _queued_message(wait))
    return redirect("submission-confirm", token=submission.token)


@rule(roles.SUBMIT, roles.CANCEL_ANY)
@require_POST
def submission_capacity_cancel(request: HttpRequest, token: str) -> HttpResponse:
    # An operator may stop anyone's wait (CapacityWait.may_cancel); others find only their own.
    submission = submission_for(request.user, token, others=request.user.has_perm(roles.CANCEL_ANY))
    _cancel(request, capacity.active_wait(submission=submission))
    if submission.user_id == request.user.pk:
        return redirect("submission-confirm", token=submission.token)
    return redirect("connection-detail", slug=submission.connection.slug)


def _cancel(request: HttpRequest, wait: CapacityWait | None) -> None:
    if wait is None:
        messages.info(request, "Nothing is waiting for room here.")
        return
    if not wait.may_cancel(request.user):
        raise PermissionDenied("The person who asked for it, or an operator, may stop the wait.")
    with shown(request):
        capacity.capacity_wait_cancel(wait=wait, user=request.user)
        messages.success(request, "Stopped waiting: it will not be submitted again.")


def _usable(user: Any, connection: Connection) -> None:
    """New batches only on a connection the person may use (enabled, with a key)."""
    if connection not in Connection.objects.listed_to(user, usable=True):
        raise PermissionDenied(f"{connection.name} takes no new batches from you.")


def _queued_message(wait: CapacityWait) -> str:
    check = capacity.capacity_for(
        connection=wait.connection, model=wait.model, needed=wait.tokens_needed
    )
    return (
        "It will be submitted again by the sync worker as soon as the estimate leaves room. "
        + check.summary()
    )


# --- What pages show ------------------------------------------------------------------------


def batch_panel(*, batch: Batch, user: Any) -> dict[str, Any] | None:
    """For the batch page: the explanation, the wait and the button; None for a batch that did
    not fail for lack of room (no query)."""
    if not capacity.failed_for_lack_of_room(batch):
        return None
    wait = capacity.latest_wait(batch=batch)
    model = capacity.failed_model(batch)
    return {
        "explanation": capacity.explanation(model=model),
        "wait": wait,
        "check": capacity.capacity_for(
            connection=batch.connection,
            model=model,
            needed=wait.tokens_needed if wait else capacity.batch_input_estimate(batch=batch),
        ),
        "may_queue": (wait is None or wait.state in _ENDED_WITHOUT_BATCH)
        and user.has_perm(roles.SUBMIT)
        and bool(batch.input_file_id and model)
        and not batch.retries.exists(),
        "may_cancel": bool(wait and wait.may_cancel(user)),
    }


_ENDED_WITHOUT_BATCH = (CapacityWait.State.CANCELLED, CapacityWait.State.GAVE_UP)


def confirm_panel(*, submission: Submission, user: Any) -> dict[str, Any]:
    """For the confirm page: whether the file fits, and the wait after a refused create."""
    wait = capacity.latest_wait(submission=submission)
    refused = capacity.refused_for_lack_of_room(submission)
    return {
        "capacity": capacity.submission_capacity(submission=submission),
        "capacity_refused": refused,
        "capacity_wait": wait,
        "capacity_may_queue": refused and (wait is None or wait.state in _ENDED_WITHOUT_BATCH),
        "capacity_may_cancel": bool(wait and wait.may_cancel(user)),
    }


def connection_panel(*, connection: Connection, user: Any) -> dict[str, Any]:
    """For the connection page: each model's limit and estimate, and what waits for room."""
    waits = list(
        CapacityWait.objects.filter(connection=connection, state__in=CapacityWait.ACTIVE)
        .select_related("batch", "submission", "user")
        .order_by("created_at", "id")
    )
    for wait in waits:
        wait.user_may_cancel = wait.may_cancel(user)
    return {
        "capacity_rows": capacity.connection_capacity(connection=connection),
        "capacity_waits": waits,
        "capacity_defaults": capacity.PUBLISHED_DEFAULTS,
    }
