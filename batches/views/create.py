"""Creating a batch: the form, the check of the input file, the confirmation, the submit."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .. import roles
from ..errors import Failure
from ..forms import BatchCreateForm
from ..jsonl_check import ENDPOINTS
from ..models import Connection, Submission
from ..services import batches as batch_services
from ..services import costs, submissions
from . import failures
from .access import rule
from .capacity import confirm_panel
from .lookups import submission_for

SHOWN_PROBLEMS = 50


@rule(roles.SUBMIT)
@require_http_methods(["GET", "POST"])
def batch_create(request: HttpRequest) -> HttpResponse:
    connections = Connection.objects.listed_to(request.user, usable=True)
    if request.method == "GET":
        initial = {
            "submission_token": batch_services.new_submission_token(),
            "completion_window": "24h",
            "connection": _last_connection(request.user, connections),
        }
        if request.GET.get("endpoint") in ENDPOINTS:
            initial["endpoint"] = request.GET["endpoint"]
        if request.GET.get("connection") in {c.slug for c in connections}:
            initial["connection"] = request.GET["connection"]
        return _form_page(request, BatchCreateForm(initial=initial, connections=connections))

    form = BatchCreateForm(request.POST, request.FILES, connections=connections)
    if not form.is_valid():
        return _form_page(request, form, status=400)
    data = form.cleaned_data
    connection = data["connection"]
    upload: UploadedFile | None = data["input_file"]
    try:
        if upload is None:
            submission = submissions.submission_for_file_id(
                user=request.user,
                token=data["submission_token"],
                connection=connection,
                input_file_id=data["input_file_id"],
                request=form.request_data(),
            )
            return _submit(request, submission, form=form)
        submission, report = submissions.submission_check_file(
            user=request.user,
            token=data["submission_token"],
            connection=connection,
            stream=upload.file,
            filename=upload.name or "input.jsonl",
            endpoint=data["endpoint"] or None,
            request=form.request_data(),
            temporary_path=getattr(upload, "temporary_file_path", lambda: None)(),
        )
    except submissions.AlreadySubmitted as already:
        return _already_submitted(request, already.submission)
    except Failure as failure:
        form.add_error(None, failures.sentence(failure))
        return _form_page(request, form, status=failures.status(failure))
    if submission is None:
        return _form_page(request, form, report=report, status=400)
    return redirect("submission-confirm", token=submission.token)


@rule(roles.SUBMIT)
@require_http_methods(["GET", "POST"])
def submission_confirm(request: HttpRequest, token: str) -> HttpResponse:
    """The summary of a checked file, and the button that uploads it and creates the batch.
    Found by token and owner: another person's is not found (a superuser may look at it)."""
    submission = submission_for(
        request.user, token, others=request.method == "GET" and request.user.is_superuser
    )
    if submission.state == Submission.State.DONE and submission.batch_id:
        return redirect(submission.batch)
    if request.method == "GET":
        context = {"submission": submission, "cost": _cost_range(submission)}
        context.update(confirm_panel(submission=submission, user=request.user))
        return render(request, "batches/confirm.html", context)
    return _submit(request, submission)


def _submit(
    request: HttpRequest, submission: Submission, *, form: BatchCreateForm | None = None
) -> HttpResponse:
    try:
        batch = submissions.submission_submit(submission=submission, user=request.user)
    except submissions.AlreadySubmitted as already:
        return _already_submitted(request, already.submission)
    except Failure as failure:
        message = failures.sentence(failure, "The batch was not created.")
        if form is not None:
            form.add_error(None, message)
            return _form_page(request, form, status=failures.status(failure))
        context = {"submission": submission, "error": message, "cost": _cost_range(submission)}
        context.update(confirm_panel(submission=submission, user=request.user))
        return render(request, "batches/confirm.html", context, status=failures.status(failure))
    messages.success(request, f"Batch {batch.openai_id} created.")
    return redirect(batch)


def _already_submitted(request: HttpRequest, submission: Submission) -> HttpResponse:
    if submission.state == Submission.State.DONE and submission.batch_id:
        messages.info(request, "This form was already submitted; here is the batch it created.")
        return redirect(submission.batch)
    messages.warning(
        request,
        "This form is already being submitted. The batch will appear in the list in a moment.",
    )
    return redirect("batch-list")


def _last_connection(user: Any, connections: list[Connection]) -> str:
    """The connection the person used last, when they may still use it."""
    slugs = [c.slug for c in connections]
    last = (
        Submission.objects.filter(user=user, connection__slug__in=slugs)
        .order_by("-created_at")
        .values_list("connection__slug", flat=True)
        .first()
    )
    return last or (slugs[0] if slugs else "")


def _form_page(
    request: HttpRequest, form: BatchCreateForm, *, report=None, status: int = 200
) -> HttpResponse:
    context = {
        "form": form,
        "connections": list(form.connections.values()),
        "report": report,
        "problems": report.problems[:SHOWN_PROBLEMS] if report else [],
    }
    return render(request, "batches/create.html", context, status=status)


def _cost_range(submission: Submission) -> costs.CostRange | None:
    """The estimate of a checked file; none for a file uploaded elsewhere (nothing was read)."""
    if not submission.facts:
        return None
    return costs.submission_cost_range(submission=submission)
