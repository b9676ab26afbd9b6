"""What a finished batch produced: downloads, the results table, one result, retry, CSV."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet, Window
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from .. import roles, storage
from ..models import Batch, Event, ResultFile, ResultRow
from ..services import batches as batch_services
from ..services import connections as connection_services
from ..services import result_files, submissions
from .access import rule
from .failures import shown
from .lookups import batch_for

RESULTS_PAGE_SIZE = 50
# `ok IN (false)` rather than the `NOT ok` Django writes for ok=False: SQLite uses the
# (batch, ok, input_line) index only for the former, and scans the whole batch for the latter.
NOT_OK = Q(ok__in=[False])
MAX_PAGE = 10**7
CONTENT_TYPE = "application/jsonl; charset=utf-8"


@rule(roles.VIEW)
@require_GET
def batch_download(request: HttpRequest, slug: str, openai_id: str, kind: str) -> HttpResponse:
    batch = batch_for(request.user, slug, openai_id)
    if kind not in ResultFile.Kind.values:
        return render(request, "404.html", status=404)
    with shown(request, f"The {kind} file could not be downloaded.") as outcome:
        download = result_files.file_download(
            batch=batch,
            kind=kind,
            client=connection_services.get_client(connection=batch.connection),
        )
    if not outcome:
        Event.record(
            Event.Action.DOWNLOAD,
            user=request.user,
            batch=batch,
            target=f"{kind} file",
            detail=str(outcome.failure),
            error=outcome.failure,
        )
        return redirect(batch)
    response = StreamingHttpResponse(download.chunks, content_type=CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    if download.size is not None:
        response["Content-Length"] = str(download.size)
    Event.record(Event.Action.DOWNLOAD, user=request.user, batch=batch, detail=f"{kind} file")
    return response


def _ingested(request: HttpRequest, batch: Batch) -> bool:
    """Make sure the results table exists; say why on the page when it cannot be built."""
    if batch.results_ingested_at:
        result_files.results_touch(batch=batch)
        return True
    if not batch.is_terminal:
        messages.info(request, "Results can be read once the batch has finished.")
        return False
    with shown(request, "The result files could not be fetched.") as outcome:
        client = connection_services.get_client(connection=batch.connection)
        result_files.results_ingest(batch=batch, client=client)
        if batch.summary_computed_at is None:
            result_files.batch_summarize(batch=batch, client=client)
    return bool(outcome)


@rule(roles.VIEW)
@require_GET
def batch_results(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    batch = batch_for(request.user, slug, openai_id)
    if not _ingested(request, batch):
        return redirect(batch)
    rows = ResultRow.objects.filter(batch=batch)
    failures_only = request.GET.get("failed") == "1"
    query = request.GET.get("q", "").strip()[:200]
    if failures_only:
        rows = rows.filter(NOT_OK)
    rows = rows.order_by("input_line", "id")
    if query:
        rows = rows.filter(
            Q(custom_id__icontains=query)
            | Q(answer_preview__icontains=query)
            | Q(error_message__icontains=query)
            | Q(request_preview__icontains=query)
        )
        page = _search_page(rows, request.GET.get("page"))
    else:
        page = Paginator(rows, RESULTS_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "batch": batch,
        "page": page,
        "failures_only": failures_only,
        "query": query,
        "failed_total": ResultRow.objects.filter(NOT_OK, batch=batch).count(),
    }
    return render(request, "batches/results.html", context)


def _search_page(rows: QuerySet[ResultRow], number: str | None) -> Page:
    """A page of search results and the number of matches from one pass over the rows.

    A search reads the text of every row of the batch (a LIKE cannot use an index); the usual
    COUNT and then the page would read them twice, which is most of a request's time at
    50,000 rows. `COUNT(*) OVER ()` gives the total along with the page.
    """
    paginator = Paginator(rows, RESULTS_PAGE_SIZE)
    try:
        wanted = min(max(int(number or 1), 1), MAX_PAGE)  # an OFFSET the database can take
    except ValueError:
        wanted = 1
    start = (wanted - 1) * RESULTS_PAGE_SIZE
    found = list(rows.annotate(matches=Window(Count("id")))[start : start + RESULTS_PAGE_SIZE])
    if not found:  # nothing matches, or past the last page: count, then show the last page
        return paginator.get_page(wanted)
    paginator.count = found[0].matches  # a cached_property: no COUNT query is made
    return Page(found, wanted, paginator)


@rule(roles.VIEW)
@require_GET
def result_view(request: HttpRequest, slug: str, openai_id: str, row_id: int) -> HttpResponse:
    batch = batch_for(request.user, slug, openai_id)
    row = get_object_or_404(ResultRow.objects.select_related("batch"), pk=row_id, batch=batch)
    result_files.results_touch(batch=batch)
    context = {"batch": batch, "row": row, **result_files.result_detail(row=row)}
    return render(request, "batches/result.html", context)


@rule(roles.VIEW)
@require_GET
def results_export(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    batch = batch_for(request.user, slug, openai_id)
    if not _ingested(request, batch):
        return redirect(batch)
    response = StreamingHttpResponse(result_files.results_csv(batch=batch), content_type="text/csv")
    name = result_files.safe_filename(f"{batch.openai_id}_results.csv")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@rule(roles.SUBMIT)
@require_POST
def batch_retry(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    """Stage the requests that did not succeed as a new input file; the person confirms it on
    the same page as any new batch."""
    batch = batch_for(request.user, slug, openai_id)
    # A token of the server's shape is kept (the same retry sent twice is one submission);
    # anything else is replaced by a new one. The staged file's name is never the token.
    token = request.POST.get("submission_token", "")
    if not storage.is_token(token):
        token = batch_services.new_submission_token()
    with shown(request, "The retry could not be prepared.") as outcome:
        try:
            submission = result_files.batch_retry_stage(
                batch=batch,
                user=request.user,
                token=token,
                client=connection_services.get_client(connection=batch.connection),
            )
        except submissions.AlreadySubmitted as already:
            submission = already.submission
            if submission.batch_id:
                messages.info(request, "This retry was already submitted.")
                return redirect(submission.batch)
    if not outcome:
        return redirect(batch)
    return redirect("submission-confirm", token=submission.token)
