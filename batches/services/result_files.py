"""What a finished batch produced: downloads, the stored summary, the results table, the retry
file and CSV exports.

Files are copied from upstream to `data/results/<batch>/` once, streamed to disk in chunks, and
everything else reads the local copies a line at a time, so memory stays flat whatever the size.
Copies and result rows not looked at for BATCHWEB_RESULT_RETENTION_DAYS are removed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import storage
from ..errors import ServiceError
from ..jsonl_check import check_jsonl
from ..models import Batch, Connection, Event, ResultFile, ResultRow, Submission
from ..openai_client import NotFound, OpenAIClient, OpenAIError, UpstreamUnavailable
from ..payloads import clean_json, clean_text
from ..results import (
    ResultLineError,
    ResultSummary,
    build_retry_file,
    parse_result_line,
    read_outcomes,
    summarize,
)
from .connections import get_client
from .costs import batch_cost_store
from .submissions import (
    AlreadySubmitted,
    SubmissionTokenTaken,
    check_limits,
    report_facts,
    staging_quota_check,
    submission_stage,
)

logger = logging.getLogger(__name__)

CHUNK = 1 << 16
PREVIEW_CHARS = 300
INGEST_BATCH = 2000
TOUCH_EVERY = dt.timedelta(hours=1)

KIND_LABELS = {"input": "input", "output": "output", "error": "error"}


class FileGone(ServiceError):
    """The file no longer exists upstream (expired or deleted)."""


def _results_folder(batch: Batch) -> str:
    # Batch ids come from upstream: keep only the characters of a server-made name.
    safe = "".join(c for c in batch.openai_id if c.isascii() and (c.isalnum() or c in "-_"))
    return f"{batch.pk}-{safe[:120]}"


def results_dir(batch: Batch) -> Path:
    path = storage.data_path("results", _results_folder(batch))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _copy_path(copy: ResultFile | None) -> Path | None:
    """The local copy a ResultFile row names, when it is still a file of data/results/ (a
    stored path is checked again before it is opened)."""
    if copy is None:
        return None
    path = storage.stored_path("results", copy.path)
    return path if path is not None and path.is_file() else None


def file_id_of(batch: Batch, kind: str) -> str:
    return {
        ResultFile.Kind.INPUT: batch.input_file_id,
        ResultFile.Kind.OUTPUT: batch.output_file_id,
        ResultFile.Kind.ERROR: batch.error_file_id,
    }[kind]


def download_name(batch: Batch, kind: str) -> str:
    return safe_filename(f"{batch.openai_id}_{kind}.jsonl")


def safe_filename(name: str) -> str:
    """A file name for a Content-Disposition header: batch ids come from upstream, and a quote,
    a line break or a right-to-left override in one must not reach the header."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)[:200]


def _gone_message(kind: str) -> str:
    if kind == ResultFile.Kind.INPUT:
        return "The input file no longer exists upstream (input files expire after 30 days)."
    return (
        f"The {kind} file no longer exists upstream: OpenAI deletes output and error files "
        "30 days after a batch completes, or sooner when an expiry was set."
    )


# --- Downloads ------------------------------------------------------------------------------


@dataclass
class Download:
    chunks: Iterator[bytes]
    filename: str
    size: int | None


def file_download(*, batch: Batch, kind: str, client: OpenAIClient | None = None) -> Download:
    """Stream one of the batch's files: from the local copy when there is one, else straight
    from upstream, chunk by chunk. Raises FileGone for a file upstream no longer has."""
    file_id = file_id_of(batch, kind)
    if not file_id:
        raise ServiceError(f"This batch has no {kind} file.")
    path = _usable_copy(batch, kind, file_id)
    if path is not None:
        return Download(_read_chunks(path), download_name(batch, kind), path.stat().st_size)
    client = client or get_client(connection=batch.connection)
    try:
        response = client.open_file_content(file_id)
    except NotFound as error:
        raise FileGone(_gone_message(kind)) from error
    # requests undoes a Content-Encoding (gzip) while streaming: the length upstream announced
    # is then that of the compressed bytes, and passing it on would cut the download short.
    encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    size = None if encoded else response.headers.get("Content-Length")

    def chunks() -> Iterator[bytes]:
        try:
            yield from response.iter_content(CHUNK)
        except OSError as exc:  # requests' errors: the connection dropped part way
            # The headers are sent: the browser sees the download break (it is shorter than
            # announced, or its last chunk never comes); the log says why, in words.
            logger.warning(
                "download of the %s file of %s interrupted upstream", kind, batch.openai_id
            )
            raise UpstreamUnavailable(f"the download of the {kind} file was interrupted") from exc
        finally:
            response.close()

    return Download(chunks(), download_name(batch, kind), int(size) if size else None)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def _usable_copy(batch: Batch, kind: str, file_id: str) -> Path | None:
    copy = ResultFile.objects.filter(batch=batch, kind=kind, file_id=file_id).first()
    path = _copy_path(copy)
    if copy is None or path is None:
        return None
    ResultFile.objects.filter(pk=copy.pk).update(last_used_at=timezone.now())
    return path


def results_touch(*, batch: Batch) -> None:
    """Count a look at the batch's results as a use of its local copies. The results pages read
    the rows, not the files, so without this the cleanup would remove what people are reading.
    A read on most views and a write once an hour at most (on SQLite even an UPDATE that
    matches nothing takes the write lock, hence the look first)."""
    now = timezone.now()
    stale = ResultFile.objects.filter(batch=batch, last_used_at__lt=now - TOUCH_EVERY)
    if stale.exists():
        stale.update(last_used_at=now)


def local_copy(*, batch: Batch, kind: str, client: OpenAIClient | None = None) -> Path | None:
    """The path of a local copy of one of the batch's files, fetched on first use; None when the
    batch has no such file. Raises FileGone when upstream no longer has it."""
    file_id = file_id_of(batch, kind)
    if not file_id:
        return None
    path = _usable_copy(batch, kind, file_id)
    if path is not None:
        return path
    client = client or get_client(connection=batch.connection)
    results_dir(batch)
    target = storage.data_path("results", _results_folder(batch), kind)
    try:
        response = client.open_file_content(file_id)
    except NotFound as error:
        raise FileGone(_gone_message(kind)) from error
    size = 0
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        try:
            for chunk in response.iter_content(CHUNK):
                tmp.write(chunk)
                size += len(chunk)
        except OpenAIError:
            Path(tmp.name).unlink(missing_ok=True)
            raise
        except Exception as exc:  # requests' own transport errors mid-stream
            Path(tmp.name).unlink(missing_ok=True)
            raise ServiceError(f"The {kind} file download was interrupted.") from exc
        finally:
            response.close()
    Path(tmp.name).replace(target)
    ResultFile.objects.update_or_create(
        batch=batch,
        kind=kind,
        defaults={
            "file_id": file_id,
            "path": str(target),
            "bytes": size,
            "fetched_at": timezone.now(),
            "last_used_at": timezone.now(),
        },
    )
    return target


# --- Summary --------------------------------------------------------------------------------


def batch_summarize(*, batch: Batch, client: OpenAIClient | None = None) -> ResultSummary | None:
    """Compute and store what a finished batch produced, from its output and error files.

    Returns None (and stores nothing) for a batch that is not finished yet.
    """
    if not batch.is_terminal:
        return None
    client = client or get_client(connection=batch.connection)
    output = local_copy(batch=batch, kind=ResultFile.Kind.OUTPUT, client=client)
    errors = local_copy(batch=batch, kind=ResultFile.Kind.ERROR, client=client)
    with _open(output) as out_stream, _open(errors) as err_stream:
        summary = summarize([out_stream, err_stream], total_requests=batch.request_total)
    # Error codes and messages come from upstream: a lone surrogate would not be valid JSON
    # for PostgreSQL (SQLite stores it; pages would then fail to encode it).
    stored = clean_json(summary.to_dict())
    Batch.objects.filter(pk=batch.pk).update(
        result_summary=stored, summary_computed_at=timezone.now()
    )
    batch.result_summary = stored
    return summary


class _open:
    """Open a path for reading, or stand in for a missing file with None."""

    def __init__(self, path: Path | None) -> None:
        self.stream: BinaryIO | None = path.open("rb") if path else None

    def __enter__(self) -> BinaryIO | None:
        return self.stream

    def __exit__(self, *exc: Any) -> None:
        if self.stream:
            self.stream.close()


def results_due(
    *,
    connection: Connection,
    client: OpenAIClient | None = None,
    finished_since: dt.datetime,
    limit: int = 1,
) -> int:
    """Build the results table of a connection's batches made through batchweb that finished
    lately, so the first person to open their results does not wait for it; for the worker."""
    done = 0
    pending = Batch.objects.filter(
        connection=connection, running=False, results_ingested_at=None, created_by__isnull=False
    ).exclude(output_file_id="", error_file_id="")
    pending = pending.filter(
        Q(completed_at__gte=finished_since)
        | Q(failed_at__gte=finished_since)
        | Q(expired_at__gte=finished_since)
        | Q(cancelled_at__gte=finished_since)
    )
    for batch in pending.order_by("-created_at")[:limit]:
        try:
            results_ingest(batch=batch, client=client)
        except (OpenAIError, ServiceError) as error:  # FileGone included: shown on opening
            logger.warning("results table of %s not built: %s", batch.openai_id, error)
            continue
        done += 1
    return done


def summaries_due(
    *,
    connection: Connection,
    client: OpenAIClient | None = None,
    limit: int = 5,
    finished_since: dt.datetime | None = None,
    synced_since: dt.datetime | None = None,
) -> int:
    """Summarize finished batches that have none yet; for the worker. Returns how many.

    `finished_since` keeps the worker to batches that finished lately: a first sync of an old
    organisation would otherwise download every result file it ever made. Older batches are
    summarized when someone opens their results. `synced_since`: only batches stored since then
    (those a sync pass just saw end).
    """
    done = 0
    pending = Batch.objects.filter(
        connection=connection, running=False, summary_computed_at=None
    ).exclude(output_file_id="", error_file_id="")
    if synced_since is not None:
        pending = pending.filter(synced_at__gte=synced_since)
    if finished_since is not None:
        pending = pending.filter(
            Q(completed_at__gte=finished_since)
            | Q(failed_at__gte=finished_since)
            | Q(expired_at__gte=finished_since)
            | Q(cancelled_at__gte=finished_since)
        )
    for batch in pending.order_by("-created_at")[:limit]:
        try:
            batch_summarize(batch=batch, client=client)
        except FileGone as error:
            Batch.objects.filter(pk=batch.pk).update(
                summary_computed_at=timezone.now(), last_error=str(error)
            )
        except (OpenAIError, ServiceError) as error:
            logger.warning("summary of %s failed: %s", batch.openai_id, error)
            continue
        done += 1
    return done


# --- The results table ----------------------------------------------------------------------


def results_ingest(*, batch: Batch, client: OpenAIClient | None = None) -> int:
    """Build the results table of a finished batch: one row per request, joined by custom_id
    across input, output and error files, with byte offsets for the full view. Returns the
    number of rows. Requests with no result line at all are rows too ("never ran")."""
    client = client or get_client(connection=batch.connection)
    try:
        input_path = local_copy(batch=batch, kind=ResultFile.Kind.INPUT, client=client)
    except FileGone:
        input_path = None  # expired input: results are still worth showing
    output_path = local_copy(batch=batch, kind=ResultFile.Kind.OUTPUT, client=client)
    error_path = local_copy(batch=batch, kind=ResultFile.Kind.ERROR, client=client)

    inputs: dict[str, tuple[int, int, str]] = {}
    if input_path:
        for line_no, offset, raw in _lines_with_offsets(input_path):
            custom_id, preview = _input_summary(raw)
            if custom_id is not None and custom_id not in inputs:
                inputs[custom_id] = (line_no, offset, preview)

    seen: set[str] = set()
    rows: list[ResultRow] = []
    count = 0
    with transaction.atomic():
        # One builder at a time (two people opening the results, or a worker and a person):
        # the second waits here, then finds the table built.
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        if locked.results_ingested_at:
            batch.results_ingested_at = locked.results_ingested_at
            return ResultRow.objects.filter(batch=batch).count()
        ResultRow.objects.filter(batch=batch).delete()
        for source, path in (("output", output_path), ("error", error_path)):
            if not path:
                continue
            for _line_no, offset, raw in _lines_with_offsets(path):
                row = _result_row(batch, source, offset, raw, inputs)
                if row.custom_id in seen:
                    continue  # a request answered twice: the first answer stands
                seen.add(row.custom_id)
                rows.append(row)
                if len(rows) >= INGEST_BATCH:
                    ResultRow.objects.bulk_create(rows)
                    count += len(rows)
                    rows = []
        for custom_id, (line_no, offset, preview) in inputs.items():
            if custom_id[:512] not in seen:  # an answered id is in `seen` as its row has it
                rows.append(
                    ResultRow(
                        batch=batch,
                        custom_id=custom_id[:512],
                        input_line=line_no,
                        input_offset=offset,
                        request_preview=preview,
                        error_message="This request never ran.",
                    )
                )
                if len(rows) >= INGEST_BATCH:
                    ResultRow.objects.bulk_create(rows)
                    count += len(rows)
                    rows = []
        ResultRow.objects.bulk_create(rows)
        count += len(rows)
        Batch.objects.filter(pk=batch.pk).update(results_ingested_at=timezone.now())
    batch.results_ingested_at = timezone.now()
    if batch.input_tokens is None and batch.output_tokens is None:
        # A server that reports usage only per request: the rows now give the cost.
        batch_cost_store(batch=batch)
    return count


def _lines_with_offsets(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, line) for each non-blank line."""
    offset = 0
    with path.open("rb") as stream:
        for line_no, raw in enumerate(stream, start=1):
            if raw.strip():
                yield line_no, offset, raw
            offset += len(raw)


def _input_summary(raw: bytes) -> tuple[str | None, str]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, ""
    if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
        return None, ""
    # The id as the result rows store it (see _result_row), so the two files still join.
    return clean_text(data["custom_id"]), clean_text(_request_preview(data.get("body")))


def _request_preview(body: Any) -> str:
    """The start of what was asked: the last user message, the input or the prompt."""
    if not isinstance(body, dict):
        return ""
    text: Any = None
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                text = message.get("content")
                break
    if text is None:
        text = body.get("input", body.get("prompt"))
    if isinstance(text, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in text]
        text = " ".join(str(p) for p in parts)
    return str(text or "")[:PREVIEW_CHARS]


def _result_row(
    batch: Batch, source: str, offset: int, raw: bytes, inputs: dict[str, tuple[int, int, str]]
) -> ResultRow:
    try:
        result = parse_result_line(raw)
    except ResultLineError:
        return ResultRow(
            batch=batch,
            custom_id=f"(unreadable line at byte {offset} of the {source} file)",
            source=source,
            offset=offset,
            error_message="This line of the file is not valid JSON.",
        )
    custom_id = clean_text(result.custom_id or "") or (
        f"(no custom_id at byte {offset} of the {source} file)"
    )
    line_no, input_offset, preview = inputs.get(custom_id, (None, None, ""))
    # Text from the file goes to columns: cut to their size, without what no database stores.
    return ResultRow(
        batch=batch,
        custom_id=custom_id[:512],
        input_line=line_no,
        input_offset=input_offset,
        source=source,
        offset=offset,
        ok=result.ok,
        status_code=_column_int(result.status_code),
        error_code=clean_text((result.error_code or "")[:128]),
        error_message=clean_text((result.error_message or "")[:1000]),
        request_preview=preview,
        answer_preview=clean_text((result.answer_text or "")[:PREVIEW_CHARS]),
        input_tokens=_column_int(result.input_tokens),
        output_tokens=_column_int(result.output_tokens),
        total_tokens=_column_int(result.total_tokens),
    )


def _column_int(value: int | None) -> int | None:
    """A number for a positive-integer column, or None for one no such column holds (a status
    code of 10**30 or -1 in a hostile file is junk, and would fail the insert)."""
    return value if value is not None and 0 <= value <= 2**31 - 1 else None


def result_detail(*, row: ResultRow) -> dict[str, Any]:
    """The full request and response of one result, read from the local copies."""
    batch = row.batch
    request = response = None
    if row.input_offset is not None:
        request = _json_at(batch, ResultFile.Kind.INPUT, row.input_offset)
    if row.source and row.offset is not None:
        response = _json_at(batch, row.source, row.offset)
    return {"request": request, "response": response}


def _json_at(batch: Batch, kind: str, offset: int) -> Any:
    path = _copy_path(ResultFile.objects.filter(batch=batch, kind=kind).first())
    if path is None:
        return None
    with path.open("rb") as stream:
        stream.seek(offset)
        raw = stream.readline()
    try:
        if kind == ResultFile.Kind.INPUT:
            return json.loads(raw)
        return parse_result_line(raw).raw  # with a body sent as a JSON string decoded
    except (ValueError, UnicodeDecodeError, RecursionError):
        return raw.decode("utf-8", "replace")


# --- Retry ----------------------------------------------------------------------------------


def batch_retry_stage(
    *, batch: Batch, user: Any, token: str, client: OpenAIClient | None = None
) -> Submission:
    """Build a new input file from the requests of `batch` that did not succeed (failed,
    expired, cancelled or never ran), check it like any upload, and stage it for confirmation
    through the same path as the create form. The file gets a name of its own (never the
    token); a token that is another person's submission raises SubmissionTokenTaken."""
    if not batch.is_terminal:
        raise ServiceError("Only a finished batch can be retried.")
    client = client or get_client(connection=batch.connection)
    input_path = local_copy(batch=batch, kind=ResultFile.Kind.INPUT, client=client)
    if input_path is None:
        raise ServiceError("This batch has no input file to retry from.")
    output = local_copy(batch=batch, kind=ResultFile.Kind.OUTPUT, client=client)
    errors = local_copy(batch=batch, kind=ResultFile.Kind.ERROR, client=client)
    with _open(output) as out_stream, _open(errors) as err_stream:
        outcomes = read_outcomes(out_stream, err_stream)
    staged = storage.data_path("staging", storage.new_name())
    with input_path.open("rb") as source, staged.open("wb") as target:
        report = build_retry_file(
            source, target, succeeded=outcomes.succeeded, reasons=outcomes.failed
        )
    if report.lines == 0:
        staged.unlink(missing_ok=True)
        raise ServiceError("Every request of this batch succeeded: there is nothing to retry.")
    with staged.open("rb") as stream:
        check = check_jsonl(
            stream, endpoint=batch.endpoint or None, **check_limits(batch.connection)
        )
    if not check.ok:
        staged.unlink(missing_ok=True)
        raise ServiceError(f"The retry file did not pass the checks: {check.summary()}")
    try:
        staging_quota_check(user=user, adding=staged.stat().st_size, token=token)
    except ServiceError:
        staged.unlink(missing_ok=True)
        raise
    # retry_of first: the cut to 14 pairs (batchweb adds its two) must not drop it.
    metadata = {"retry_of": batch.openai_id}
    metadata.update((k, v) for k, v in batch.user_metadata().items() if k != "retry_of")
    request = {
        "endpoint": check.endpoint,
        "completion_window": batch.completion_window or "24h",
        "metadata": dict(list(metadata.items())[:14]),
        "output_expires_after_seconds": None,
    }
    facts = {
        **report_facts(check),
        "retry_reasons": dict(sorted(report.by_reason.items(), key=lambda kv: -kv[1])),
    }
    try:
        submission = submission_stage(
            user=user,
            token=token,
            connection=batch.connection,
            request=request,
            staged_path=str(staged),
            filename=f"{batch.openai_id}_retry.jsonl",
            facts=facts,
            uploaded_file_id="",
            retry_of=batch,
        )
    except (AlreadySubmitted, SubmissionTokenTaken):
        staged.unlink(missing_ok=True)
        raise
    Event.record(
        Event.Action.RETRY,
        user=user,
        batch=batch,
        detail=f"{report.lines} requests staged for a retry",
    )
    return submission


# --- CSV ------------------------------------------------------------------------------------


class Echo:
    """A file-like object whose write() returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def results_csv(*, batch: Batch) -> Iterator[str]:
    """Every result of an ingested batch as CSV rows, in input order, with the full answer."""
    writer = csv.writer(Echo())
    yield writer.writerow(
        ["custom_id", "status", "http_status", "answer_or_error", "input_tokens",
         "output_tokens", "total_tokens"]
    )  # fmt: skip
    rows = ResultRow.objects.filter(batch=batch).order_by("input_line", "id")
    copies = {
        c.kind: path
        for c in ResultFile.objects.filter(batch=batch)
        if (path := _copy_path(c)) is not None
    }
    streams: dict[str, BinaryIO] = {}
    try:
        for row in rows.iterator(chunk_size=2000):
            text = row.error_message if not row.ok else row.answer_preview
            if row.ok and row.source in copies:
                text = _full_answer(streams, copies, row) or text
            status = "succeeded" if row.ok else ("never ran" if row.never_ran else "failed")
            yield writer.writerow(
                [
                    csv_safe(row.custom_id), status, row.status_code or "", csv_safe(text),
                    row.input_tokens or "", row.output_tokens or "", row.total_tokens or "",
                ]
            )  # fmt: skip
    finally:
        for stream in streams.values():
            stream.close()


def _full_answer(streams: dict[str, BinaryIO], copies: dict[str, Path], row: ResultRow) -> str:
    stream = streams.get(row.source)
    if stream is None:
        stream = streams[row.source] = copies[row.source].open("rb")
    stream.seek(row.offset or 0)
    try:
        return clean_text(parse_result_line(stream.readline()).answer_text or "")
    except ResultLineError:
        return ""


# What makes a spreadsheet read a cell as a formula; the full-width forms count too, since
# some spreadsheets (Excel in East Asian locales) read them as their ASCII twins.
FORMULA_STARTS = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def csv_safe(value: Any) -> str:
    """Keep spreadsheets from running a cell as a formula (CSV injection)."""
    text = "" if value is None else str(value)
    if text[:1] in FORMULA_STARTS:
        return "'" + text
    return text


def batches_csv(batches: Any) -> Iterator[str]:
    writer = csv.writer(Echo())
    yield writer.writerow(
        ["batch_id", "status", "endpoint", "model", "created_at", "completed_at",
         "requests_total", "requests_completed", "requests_failed", "input_tokens",
         "output_tokens", "created_by", "label", "input_file_id", "output_file_id",
         "error_file_id", "connection"]
    )  # fmt: skip
    for batch in batches.iterator(chunk_size=2000):
        yield writer.writerow(
            [
                # Ids, model and endpoint come from upstream (the model from the input file),
                # so they can start with "=" just as the label can.
                # An unknown status is shown as upstream spelt it: it goes through csv_safe too.
                csv_safe(batch.openai_id), csv_safe(batch.display_status()),
                csv_safe(batch.endpoint), csv_safe(batch.model), _iso(batch.created_at),
                _iso(batch.completed_at),
                _num(batch.request_total), _num(batch.request_completed),
                _num(batch.request_failed), _num(batch.input_tokens), _num(batch.output_tokens),
                csv_safe(batch.creator_name()), csv_safe(batch.label),
                csv_safe(batch.input_file_id), csv_safe(batch.output_file_id),
                csv_safe(batch.error_file_id), csv_safe(batch.connection.name),
            ]
        )  # fmt: skip


def _iso(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).isoformat() if value else ""


def _num(value: int | None) -> str:
    return "" if value is None else str(value)


# --- Retention ------------------------------------------------------------------------------


def results_cleanup(*, now: dt.datetime | None = None) -> int:
    """Remove local copies and result rows not used for the retention period."""
    days = settings.RESULT_RETENTION_DAYS
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    stale_batches = set(
        ResultFile.objects.filter(last_used_at__lt=cutoff).values_list("batch_id", flat=True)
    )
    for batch in Batch.objects.filter(pk__in=stale_batches):
        shutil.rmtree(results_dir(batch), ignore_errors=True)
        ResultFile.objects.filter(batch=batch).delete()
        ResultRow.objects.filter(batch=batch).delete()
        Batch.objects.filter(pk=batch.pk).update(results_ingested_at=None)
    return len(stale_batches)


__all__ = [
    "Download",
    "FileGone",
    "batch_retry_stage",
    "batch_summarize",
    "batches_csv",
    "file_download",
    "local_copy",
    "result_detail",
    "results_cleanup",
    "results_csv",
    "results_ingest",
    "results_touch",
    "summaries_due",
]
