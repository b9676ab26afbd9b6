"""Files through the API: the same full check as the upload form before anything leaves, then
the upload to the connection's upstream, streamed from the spooled file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from django.db.models import Q

from batches.jsonl_check import CheckReport, check_jsonl
from batches.models import Batch, Connection, Event
from batches.openai_client import OpenAIClient, OpenAIError
from batches.services.connections import get_client
from batches.services.submissions import check_limits

from ..errors import ApiError
from ..models import ApiFile

# How many problems the refusal names (all are in the audit entry, up to its size).
SHOWN_PROBLEMS = 5
EXPIRY_SECONDS = (3600, 2_592_000)


def file_upload(
    *,
    user: Any,
    connection: Connection,
    stream: BinaryIO,
    filename: str,
    purpose: str,
    expires_after_seconds: int | None = None,
    client: OpenAIClient | None = None,
) -> dict[str, Any]:
    """Check a batch input file and upload it. Raises ApiError (nothing sent) for a file the
    check refuses, and the client's errors for an upstream failure; both are audited."""
    filename = (filename or "input.jsonl")[:255]
    if purpose != "batch":
        raise ApiError(
            400,
            f"batchweb takes batch input files only: purpose must be “batch”, "
            f"not “{purpose[:40]}”.",
            param="purpose",
            code="invalid_value",
        )
    report = check_jsonl(stream, **check_limits(connection))
    if not report.ok:
        message = refusal_message(report, filename)
        Event.record(
            Event.Action.UPLOAD_FAILED,
            user=user,
            connection=connection,
            target=filename,
            detail=_full_report(report),
        )
        raise ApiError(
            400, message, param="file", code=_refusal_code(report, connection), audit=False
        )
    stream.seek(0)
    client = client or get_client(connection=connection)
    try:
        uploaded = client.upload_file(
            fileobj=stream,
            filename=filename,
            purpose="batch",
            expires_after_seconds=expires_after_seconds,
        )
    except OpenAIError as error:
        Event.record(
            Event.Action.UPLOAD_FAILED,
            user=user,
            connection=connection,
            target=filename,
            error=error,
        )
        raise
    file_id = str(uploaded["id"])
    ApiFile.objects.update_or_create(
        connection=connection,
        file_id=file_id[:128],
        defaults={
            "user": user,
            "filename": filename,
            "bytes": report.bytes,
            "lines": report.lines,
            "endpoint": report.endpoint or "",
            "model": (report.model or "")[:128],
        },
    )
    Event.record(
        Event.Action.UPLOAD,
        user=user,
        connection=connection,
        target=filename,
        detail=f"{filename} as {file_id} ({report.bytes} bytes)",
    )
    return uploaded


def refusal_message(report: CheckReport, filename: str) -> str:
    """The check's findings in one message: the whole-file problems, then the first line
    problems by line number."""
    found = [*report.file_problems, *(str(p) for p in report.problems[:SHOWN_PROBLEMS])]
    more = report.problem_count - min(len(report.problems), SHOWN_PROBLEMS)
    text = f"{filename} was not uploaded: {report.summary()} " + "; ".join(found)
    if more > 0:
        text += f"; and {more:,} more line {'problem' if more == 1 else 'problems'}"
    return text.rstrip() + "."


def _full_report(report: CheckReport) -> str:
    lines = [report.summary(), *report.file_problems, *(str(p) for p in report.problems)]
    return "\n".join(lines)


def _refusal_code(report: CheckReport, connection: Connection) -> str:
    if report.bytes > connection.byte_limit():
        return "file_too_large"
    if report.lines > connection.request_limit():
        return "too_many_requests"
    return "invalid_batch_file"


# --- Reading files back ----------------------------------------------------------------------


def file_readable(*, user: Any, connection: Connection, file_id: str) -> bool:
    """Whether a token's owner may read this file of the connection: the input, output or error
    file of a batch they may see there (BatchQuerySet.visible_to, the one visibility rule), or
    a file they uploaded through /v1/files. Any other file id of the connection (another
    person's upload, a file of no batch) is not theirs to read, though the key could fetch it."""
    of_a_batch = (
        Batch.objects.visible_to(user)
        .filter(connection=connection)
        .filter(Q(input_file_id=file_id) | Q(output_file_id=file_id) | Q(error_file_id=file_id))
    )
    if of_a_batch.exists():
        return True
    return ApiFile.objects.filter(connection=connection, file_id=file_id, user=user).exists()


def _readable_or_404(*, user: Any, connection: Connection, file_id: str) -> None:
    if not file_readable(user=user, connection=connection, file_id=file_id):
        # The same answer as for a file upstream does not know: whether it exists is not told.
        raise ApiError(
            404,
            f"No such File object: {file_id} (or not one of yours: a token reads the files of "
            "the batches its owner may see, and the files its owner uploaded).",
            param="file_id",
            code="not_found",
            audit=False,
        )


def file_retrieve(
    *, user: Any, connection: Connection, file_id: str, client: OpenAIClient | None = None
) -> dict[str, Any]:
    """A File object the person may read (file_readable), from upstream."""
    _readable_or_404(user=user, connection=connection, file_id=file_id)
    client = client or get_client(connection=connection)
    return client.retrieve_file(file_id)


def file_content(
    *, user: Any, connection: Connection, file_id: str, client: OpenAIClient | None = None
) -> tuple[Iterator[bytes], str]:
    """Start streaming the bytes of a file the person may read (file_readable); errors are
    raised before the first byte, so the caller can still answer with the right status."""
    _readable_or_404(user=user, connection=connection, file_id=file_id)
    client = client or get_client(connection=connection)
    try:
        response = client.open_file_content(file_id)
    except OpenAIError as error:
        Event.record(
            Event.Action.DOWNLOAD, user=user, connection=connection, target=file_id, error=error
        )
        raise
    Event.record(Event.Action.DOWNLOAD, user=user, connection=connection, target=file_id)
    content_type = response.headers.get("Content-Type") or "application/octet-stream"

    def chunks() -> Iterator[bytes]:
        try:
            yield from response.iter_content(1 << 16)
        finally:
            response.close()

    return chunks(), content_type
