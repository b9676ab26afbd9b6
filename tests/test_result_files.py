"""Tests for batches/services/result_files.py: local copies, downloads, the stored summary, the
results table, one result, the retry file, CSV exports and retention (issue 5).

Upstream is the `responses` mock: each test registers the `GET /files/<id>/content` bodies it
needs, so an unexpected download fails the test, and `upstream.calls` shows what was fetched.
Local copies go to a temporary DATA_DIR, never into the repository.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from batches.errors import ServiceError
from batches.models import Batch, Event, ResultFile, ResultRow, Submission, default_connection
from batches.results import ResultSummary
from batches.services.batches import batch_upsert
from batches.services.result_files import (
    FileGone,
    batch_retry_stage,
    batch_summarize,
    batches_csv,
    file_download,
    local_copy,
    result_detail,
    results_cleanup,
    results_csv,
    results_ingest,
    summaries_due,
)
from tests.conftest import make_batch
from tests.test_results import chat_body, expired_line, http_error_line, ok_line

API = settings.OPENAI_BASE_URL
CHAT = "/v1/chat/completions"
DONE_AT = 1764003600  # completed_at of the canned batches


# --- Canned files and batches ----------------------------------------------------------------


def input_line(custom_id: str, text: str | None = None) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": text or f"Question {custom_id}"},
            ],
        },
    }


def jsonl(lines: Iterable[dict[str, Any] | bytes]) -> bytes:
    """JSONL bytes; bytes items are written as given (a broken line, odd spacing...)."""
    return b"".join(
        line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n" for line in lines
    )


def string_body_line(custom_id: str, content: str) -> dict[str, Any]:
    """A success whose `response.body` is a JSON string, as some gateways send it."""
    line = ok_line(custom_id, body=chat_body(content))
    line["response"]["body"] = json.dumps(line["response"]["body"])
    return line


def message_only_line(custom_id: str, message: str, status: int = 500) -> dict[str, Any]:
    """An HTTP error whose body holds only a message (no type, no code)."""
    return ok_line(custom_id, body={"error": {"message": message}}, status=status)


# The standard finished batch: six requests, answers in no particular order across both files.
#   req-1 succeeded (body an object)         req-4 HTTP 500, error with only a message
#   req-2 succeeded (body a JSON string)     req-5 never ran: `response: null` + batch_expired
#   req-3 HTTP 400 invalid_value             req-6 no line anywhere: never ran
INPUT_LINES = [input_line(f"req-{i}") for i in range(1, 7)]
INPUT = jsonl(INPUT_LINES)
OUTPUT = jsonl(
    [
        string_body_line("req-2", "Answer two, sent as a string"),
        ok_line("req-1", body=chat_body("Paris is the capital of France.", 12, 7)),
    ]
)
ERRORS = jsonl(
    [
        expired_line("req-5"),
        http_error_line("req-3", 400, "Invalid 'temperature': must be <= 2.", "invalid_value"),
        message_only_line("req-4", "The server had an error."),
    ]
)


def file_ids(openai_id: str) -> dict[str, str]:
    suffix = openai_id.removeprefix("batch_")
    return {
        "input": f"file-in-{suffix}",
        "output": f"file-out-{suffix}",
        "error": f"file-err-{suffix}",
    }


def finished_batch(
    openai_id: str = "batch_done1",
    *,
    status: str = "completed",
    output: bool = True,
    errors: bool = True,
    counts: tuple[int, int, int] = (6, 2, 3),
    **extra: Any,
) -> Batch:
    """A batch in a terminal status, cached as the sync would store it."""
    ids = file_ids(openai_id)
    total, completed, failed = counts
    ended = {"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}
    payload = make_batch(
        id=openai_id,
        status=status,
        input_file_id=ids["input"],
        output_file_id=ids["output"] if output else None,
        error_file_id=ids["error"] if errors else None,
        request_counts={"total": total, "completed": completed, "failed": failed},
        **{ended.get(status, "failed_at"): DONE_AT},
        **extra,
    )
    return batch_upsert(payload=payload).batch


def content_url(file_id: str) -> str:
    return f"{API}/files/{file_id}/content"


def serve(upstream, file_id: str, body: bytes | io.BufferedReader, **options: Any) -> None:
    upstream.get(
        content_url(file_id),
        body=body,
        content_type="application/octet-stream",
        headers={"x-request-id": "req_content"},
        **options,
    )


def gone(upstream, file_id: str) -> None:
    upstream.get(
        content_url(file_id),
        status=404,
        json={
            "error": {
                "message": f"No such File object: {file_id}",
                "type": "invalid_request_error",
                "param": "id",
                "code": None,
            }
        },
        headers={"x-request-id": "req_gone"},
    )


def serve_batch(
    upstream,
    batch: Batch,
    *,
    input: bytes | None = INPUT,
    output: bytes | None = OUTPUT,
    errors: bytes | None = ERRORS,
) -> None:
    """Register the batch's three files; None registers a 404 (expired or deleted upstream)."""
    for kind, body in (("input", input), ("output", output), ("error", errors)):
        file_id = {"input": batch.input_file_id, "output": batch.output_file_id}.get(
            kind, batch.error_file_id
        )
        if not file_id:
            continue
        if body is None:
            gone(upstream, file_id)
        else:
            serve(upstream, file_id, body)


def downloads(upstream) -> list[str]:
    """The file ids whose content was fetched, in order."""
    return [
        call.request.url.split("/files/")[1].split("/")[0]
        for call in upstream.calls
        if call.request.url.endswith("/content")
    ]


class LazyBody(io.RawIOBase):
    """An upstream body produced piece by piece, recording how much of it was read: a download
    that reads the whole file before sending anything shows up as `produced == size`."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces: Iterator[bytes] = iter(pieces)
        self._pending = b""
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = piece
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self.produced += size
        return size


def big_output(lines: int, line_bytes: int = 1000) -> Iterator[bytes]:
    """`lines` output lines of about `line_bytes` each, generated lazily."""
    filler = "x" * (line_bytes - 250)
    for i in range(lines):
        yield json.dumps(ok_line(f"req-{i}", body=chat_body(filler))).encode() + b"\n"


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


@pytest.fixture
def batch(db) -> Batch:
    return finished_batch()


# --- Local copies ----------------------------------------------------------------------------


def test_a_file_is_copied_under_data_dir_once_and_then_read_locally(upstream, batch, data_dir):
    serve(upstream, batch.output_file_id, OUTPUT)

    path = local_copy(batch=batch, kind="output")

    assert path is not None and path.read_bytes() == OUTPUT
    assert data_dir / "results" in path.parents
    copy = ResultFile.objects.get(batch=batch, kind="output")
    assert (copy.file_id, copy.bytes, Path(copy.path)) == (batch.output_file_id, len(OUTPUT), path)
    assert local_copy(batch=batch, kind="output") == path
    assert downloads(upstream) == [batch.output_file_id]


def test_a_batch_without_an_output_file_has_no_copy_of_it(upstream, db):
    batch = finished_batch("batch_allfail", output=False, counts=(3, 0, 3))

    assert local_copy(batch=batch, kind="output") is None
    assert len(upstream.calls) == 0


def test_a_file_gone_upstream_raises_file_gone_with_a_clear_message(upstream, batch):
    gone(upstream, batch.output_file_id)

    with pytest.raises(FileGone, match="no longer exists upstream"):
        local_copy(batch=batch, kind="output")
    assert not ResultFile.objects.exists()


def test_an_interrupted_download_leaves_no_partial_copy(upstream, batch, data_dir):
    def broken() -> Iterator[bytes]:
        yield OUTPUT[:20]
        raise ConnectionResetError("peer went away")

    serve(upstream, batch.output_file_id, io.BufferedReader(LazyBody(broken())))

    with pytest.raises(ServiceError, match="interrupted"):
        local_copy(batch=batch, kind="output")
    assert not ResultFile.objects.exists()
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []


def test_a_copy_deleted_from_disk_is_fetched_again(upstream, batch):
    serve(upstream, batch.output_file_id, OUTPUT)
    path = local_copy(batch=batch, kind="output")
    path.unlink()
    serve(upstream, batch.output_file_id, OUTPUT)

    assert local_copy(batch=batch, kind="output").read_bytes() == OUTPUT
    assert downloads(upstream) == [batch.output_file_id] * 2


# --- Downloads -------------------------------------------------------------------------------


def test_a_download_streams_from_upstream_without_reading_the_file_whole(upstream, batch):
    body = LazyBody(big_output(5000))  # about 5 MB
    serve(upstream, batch.output_file_id, io.BufferedReader(body))

    download = file_download(batch=batch, kind="output")

    assert isinstance(download.chunks, Iterator)
    assert download.filename == "batch_done1_output.jsonl"
    first = next(download.chunks)
    assert 0 < len(first) <= 1 << 16
    assert body.produced < 1 << 20  # a chunk or so read, not 5 MB
    rest = b"".join(download.chunks)
    assert body.produced == len(first) + len(rest) > 4_000_000
    assert (first + rest).count(b"\n") == 5000


def test_a_download_is_served_from_the_local_copy_when_there_is_one(upstream, batch):
    serve(upstream, batch.output_file_id, OUTPUT)
    local_copy(batch=batch, kind="output")
    upstream.calls.reset()

    download = file_download(batch=batch, kind="output")

    assert isinstance(download.chunks, Iterator)
    assert download.size == len(OUTPUT)
    assert b"".join(download.chunks) == OUTPUT
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("kind", ["input", "output", "error"])
def test_each_file_downloads_under_a_name_made_of_the_batch_id_and_kind(upstream, batch, kind):
    serve_batch(upstream, batch)

    download = file_download(batch=batch, kind=kind)

    assert download.filename == f"batch_done1_{kind}.jsonl"
    assert b"".join(download.chunks) == {"input": INPUT, "output": OUTPUT, "error": ERRORS}[kind]


def test_a_download_of_a_file_gone_upstream_raises_file_gone(upstream, batch):
    gone(upstream, batch.error_file_id)

    with pytest.raises(FileGone, match="no longer exists upstream"):
        file_download(batch=batch, kind="error")


def test_a_download_of_a_file_the_batch_does_not_have_is_refused(upstream, db):
    batch = finished_batch("batch_allfail", output=False, counts=(3, 0, 3))

    with pytest.raises(ServiceError, match="no output file"):
        file_download(batch=batch, kind="output")
    assert len(upstream.calls) == 0


def test_a_download_only_announces_a_size_that_matches_the_bytes_sent(upstream, batch):
    """requests decodes a gzip body, so upstream's Content-Length (of the compressed bytes)
    must not be passed on: the browser would cut the download short."""
    import gzip

    compressed = gzip.compress(OUTPUT)
    upstream.get(
        content_url(batch.output_file_id),
        body=compressed,
        headers={"Content-Encoding": "gzip", "Content-Length": str(len(compressed))},
        content_type="application/octet-stream",
    )

    download = file_download(batch=batch, kind="output")

    data = b"".join(download.chunks)
    assert data == OUTPUT
    assert download.size in (None, len(data))


# --- Summary ---------------------------------------------------------------------------------


def test_the_summary_is_computed_from_both_files_and_stored(upstream, batch):
    serve_batch(upstream, batch, input=None)

    summary = batch_summarize(batch=batch)

    assert summary.succeeded == 2
    assert summary.failed == 3
    assert summary.failed_by_status == {"400": 1, "500": 1}
    assert summary.failed_by_code == {"invalid_value": 1, "unknown": 1, "batch_expired": 1}
    assert summary.never_ran == 1  # req-6 has no line anywhere
    assert summary.input_tokens == 12 + 10 and summary.output_tokens == 7 + 3
    batch.refresh_from_db()
    assert batch.summary_computed_at is not None
    assert ResultSummary.from_dict(batch.result_summary) == summary
    assert sorted(downloads(upstream)) == sorted([batch.output_file_id, batch.error_file_id])


def test_the_summary_keeps_the_three_most_common_messages_with_counts(upstream, db):
    limited = http_error_line("a", 429, "Rate limit reached.", "rate_limit_exceeded")
    failures = (
        [{**limited, "custom_id": f"a{i}"} for i in range(4)]
        + [expired_line(f"b{i}") for i in range(3)]
        + [message_only_line(f"c{i}", "Upstream hiccup.") for i in range(2)]
        + [http_error_line("d0", 400, "Bad input.", "invalid_value")]
    )
    batch = finished_batch("batch_top", output=False, counts=(10, 0, 10))
    serve(upstream, batch.error_file_id, jsonl(failures))

    summary = batch_summarize(batch=batch)

    assert summary.top_errors == [
        ("Rate limit reached.", 4),
        ("Not executed before the window expired.", 3),
        ("Upstream hiccup.", 2),
    ]
    assert summary.failed_by_code == {
        "rate_limit_exceeded": 4,
        "batch_expired": 3,
        "unknown": 2,
        "invalid_value": 1,
    }
    assert summary.all_failed


def test_lines_that_are_not_json_are_counted_not_fatal(upstream, db):
    batch = finished_batch("batch_junk", counts=(4, 2, 1))
    output = jsonl([ok_line("req-1"), b"{not json at all\n", b"[1, 2]\n", ok_line("req-2")])
    serve(upstream, batch.output_file_id, output)
    serve(upstream, batch.error_file_id, jsonl([http_error_line("req-3")]))

    summary = batch_summarize(batch=batch)

    assert (summary.succeeded, summary.failed, summary.unreadable_lines) == (2, 1, 2)
    assert summary.never_ran == 0  # the unreadable lines probably stood for requests


def test_an_empty_error_file_is_fine(upstream, db):
    batch = finished_batch("batch_empty_err", counts=(2, 2, 0))
    serve(upstream, batch.output_file_id, jsonl([ok_line("req-1"), ok_line("req-2")]))
    serve(upstream, batch.error_file_id, b"")

    summary = batch_summarize(batch=batch)

    assert (summary.succeeded, summary.failed, summary.never_ran) == (2, 0, 0)
    assert not summary.all_failed


def test_a_batch_that_is_not_finished_gets_no_summary(upstream, db):
    running = batch_upsert(payload=make_batch(id="batch_running")).batch

    assert batch_summarize(batch=running) is None
    running.refresh_from_db()
    assert running.summary_computed_at is None
    assert len(upstream.calls) == 0


def test_summaries_due_summarizes_finished_batches_without_one(upstream, db):
    due = finished_batch("batch_due")
    serve_batch(upstream, due)
    done = finished_batch("batch_done_before")
    Batch.objects.filter(pk=done.pk).update(
        result_summary=ResultSummary(succeeded=6).to_dict(), summary_computed_at=timezone.now()
    )
    batch_upsert(payload=make_batch(id="batch_still_running"))
    finished_batch("batch_no_files", status="failed", output=False, errors=False, counts=(0, 0, 0))

    assert summaries_due(connection=default_connection()) == 1

    due.refresh_from_db()
    assert due.result_summary["succeeded"] == 2
    assert sorted(downloads(upstream)) == sorted([due.output_file_id, due.error_file_id])
    assert (
        summaries_due(connection=default_connection()) == 0
    )  # stored: nothing more to do, nothing fetched again
    assert len(downloads(upstream)) == 2


def test_summaries_due_records_a_file_gone_as_the_batchs_last_error(upstream, db):
    batch = finished_batch("batch_expired_files")
    gone(upstream, batch.output_file_id)

    assert summaries_due(connection=default_connection()) == 1

    batch.refresh_from_db()
    assert "no longer exists upstream" in batch.last_error
    assert batch.summary_computed_at is not None and batch.result_summary is None
    assert summaries_due(connection=default_connection()) == 0  # not asked again on every pass


# --- The results table -----------------------------------------------------------------------


def rows_by_id(batch: Batch) -> dict[str, ResultRow]:
    return {row.custom_id: row for row in ResultRow.objects.filter(batch=batch)}


def test_results_are_joined_to_the_input_lines_by_custom_id(upstream, batch):
    serve_batch(upstream, batch)

    assert results_ingest(batch=batch) == 6

    rows = rows_by_id(batch)
    assert sorted(rows) == [f"req-{i}" for i in range(1, 7)]
    for i in range(1, 7):
        row = rows[f"req-{i}"]
        assert row.input_line == i
        assert row.request_preview == f"Question req-{i}"  # the last user message
    assert rows["req-1"].ok and rows["req-1"].answer_preview == "Paris is the capital of France."
    assert (rows["req-1"].input_tokens, rows["req-1"].output_tokens) == (12, 7)
    assert rows["req-1"].total_tokens == 19
    assert rows["req-2"].ok and rows["req-2"].answer_preview == "Answer two, sent as a string"
    assert (rows["req-3"].ok, rows["req-3"].status_code) == (False, 400)
    assert rows["req-3"].error_code == "invalid_value"
    assert rows["req-3"].error_message == "Invalid 'temperature': must be <= 2."
    assert (rows["req-4"].status_code, rows["req-4"].error_code) == (500, "")
    assert rows["req-4"].error_message == "The server had an error."
    assert (rows["req-5"].status_code, rows["req-5"].error_code) == (None, "batch_expired")
    assert rows["req-5"].source == "error" and not rows["req-5"].never_ran
    assert rows["req-6"].never_ran and not rows["req-6"].ok
    assert rows["req-6"].error_message == "This request never ran."
    batch.refresh_from_db()
    assert batch.results_ingested_at is not None


def test_the_rows_point_at_their_lines_in_the_local_copies(upstream, batch):
    serve_batch(upstream, batch)
    results_ingest(batch=batch)

    copies = {c.kind: Path(c.path).read_bytes() for c in ResultFile.objects.filter(batch=batch)}
    for row in ResultRow.objects.filter(batch=batch):
        line = copies["input"][row.input_offset :].split(b"\n", 1)[0]
        assert json.loads(line)["custom_id"] == row.custom_id
        if not row.never_ran:
            line = copies[row.source][row.offset :].split(b"\n", 1)[0]
            assert json.loads(line)["custom_id"] == row.custom_id


def test_unreadable_result_lines_become_rows_of_their_own(upstream, db):
    batch = finished_batch("batch_junk", counts=(2, 1, 0))
    output = jsonl([ok_line("req-1"), b"{truncated\n"])
    serve_batch(upstream, batch, input=jsonl(INPUT_LINES[:2]), output=output, errors=b"\n")

    assert results_ingest(batch=batch) == 3

    unreadable = ResultRow.objects.get(batch=batch, custom_id__startswith="(unreadable")
    assert not unreadable.ok and "not valid JSON" in unreadable.error_message
    assert rows_by_id(batch)["req-2"].never_ran  # its answer may be the broken line


def test_unreadable_lines_at_the_same_offset_of_both_files_are_both_kept(upstream, db):
    batch = finished_batch("batch_junk2", counts=(2, 0, 0))
    serve_batch(upstream, batch, output=b"{broken\n", errors=b"{also broken\n")

    results_ingest(batch=batch)

    unreadable = ResultRow.objects.filter(batch=batch, custom_id__startswith="(unreadable")
    assert sorted(unreadable.values_list("source", flat=True)) == ["error", "output"]


def test_results_are_still_listed_when_the_input_file_has_expired(upstream, batch):
    serve_batch(upstream, batch, input=None)

    assert results_ingest(batch=batch) == 5  # req-6 never ran and cannot be known

    rows = rows_by_id(batch)
    assert all(row.input_line is None for row in rows.values())
    assert rows["req-1"].ok


def test_a_request_answered_twice_keeps_its_first_answer(upstream, batch):
    serve_batch(upstream, batch, errors=ERRORS + jsonl([http_error_line("req-1")]))

    assert results_ingest(batch=batch) == 6
    assert rows_by_id(batch)["req-1"].ok


def test_ingesting_again_replaces_the_rows(upstream, batch):
    serve_batch(upstream, batch)
    results_ingest(batch=batch)

    assert results_ingest(batch=batch) == 6  # from the local copies
    assert ResultRow.objects.filter(batch=batch).count() == 6
    assert len(downloads(upstream)) == 3


def test_one_result_shows_its_full_request_and_response(upstream, batch):
    serve_batch(upstream, batch)
    results_ingest(batch=batch)
    rows = rows_by_id(batch)

    detail = result_detail(row=rows["req-2"])

    assert detail["request"] == INPUT_LINES[1]
    # The body that came as a JSON string is decoded for display.
    body = detail["response"]["response"]["body"]
    assert body["choices"][0]["message"]["content"] == "Answer two, sent as a string"

    never = result_detail(row=rows["req-6"])
    assert never == {"request": INPUT_LINES[5], "response": None}


def test_one_unreadable_result_is_shown_as_its_text(upstream, db):
    batch = finished_batch("batch_junk", counts=(1, 0, 0))
    serve_batch(upstream, batch, input=jsonl(INPUT_LINES[:1]), output=b"{half a line\n")
    results_ingest(batch=batch)
    row = ResultRow.objects.get(batch=batch, custom_id__startswith="(unreadable")

    assert result_detail(row=row)["response"] == "{half a line\n"


# --- Retry -----------------------------------------------------------------------------------


def test_the_retry_file_holds_exactly_the_input_lines_that_did_not_succeed(
    upstream, batch, submitter
):
    # Byte for byte: odd spacing and key order in the input must survive.
    lines = [
        json.dumps(line, indent=None, separators=(", ", ":")).encode() + b"\n"
        for line in INPUT_LINES
    ]
    lines[2] = (
        b'{"url": "/v1/chat/completions",  "custom_id": "req-3", "method": "POST", "body": '
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "caf\xc3\xa9"}]}}\n'
    )
    serve_batch(upstream, batch, input=b"".join(lines))

    submission = batch_retry_stage(batch=batch, user=submitter, token="tok-retry1")

    staged = Path(submission.staged_path).read_bytes()
    assert staged == b"".join(lines[2:])  # req-3..6: failed, failed, expired, never ran
    assert submission.state == Submission.State.CHECKED
    assert submission.retry_of == batch
    assert submission.filename == "batch_done1_retry.jsonl"
    assert submission.facts["lines"] == 4
    assert submission.facts["retry_reasons"] == {
        "invalid_value": 1,
        "HTTP 500": 1,
        "batch_expired": 1,
        "never ran": 1,
    }
    assert submission.request["endpoint"] == CHAT
    assert submission.request["metadata"]["retry_of"] == "batch_done1"
    assert submission.request["metadata"]["job"] == "nightly-eval"  # the origin's own metadata
    assert Event.objects.get(action=Event.Action.RETRY).batch == batch


def test_the_retry_keeps_its_origin_in_metadata_even_when_the_origin_had_fourteen_pairs(
    upstream, db, submitter
):
    metadata = {f"key{i:02d}": f"value {i}" for i in range(14)}
    batch = finished_batch("batch_full_meta", metadata=metadata)
    serve_batch(upstream, batch)

    submission = batch_retry_stage(batch=batch, user=submitter, token="tok-meta")

    sent = submission.request["metadata"]
    assert len(sent) == 14  # with batchweb's token and user: the API's 16
    assert sent["retry_of"] == "batch_full_meta"


def test_nothing_to_retry_when_every_request_succeeded(upstream, db, submitter, data_dir):
    batch = finished_batch("batch_all_ok", errors=False, counts=(2, 2, 0))
    serve_batch(upstream, batch, input=jsonl(INPUT_LINES[:2]), output=OUTPUT)

    with pytest.raises(ServiceError, match="nothing to retry"):
        batch_retry_stage(batch=batch, user=submitter, token="tok-none")
    assert not Submission.objects.exists()
    assert list((data_dir / "staging").iterdir()) == []


def test_a_running_batch_cannot_be_retried(upstream, db, submitter):
    running = batch_upsert(payload=make_batch(id="batch_running")).batch

    with pytest.raises(ServiceError, match="finished"):
        batch_retry_stage(batch=running, user=submitter, token="tok-run")
    assert len(upstream.calls) == 0


def test_a_retry_needs_the_input_file(upstream, batch, submitter):
    gone(upstream, batch.input_file_id)

    with pytest.raises(FileGone, match="input file no longer exists"):
        batch_retry_stage(batch=batch, user=submitter, token="tok-gone")
    assert not Submission.objects.exists()


def test_an_expired_batch_retries_its_expired_and_never_run_requests(upstream, db, submitter):
    batch = finished_batch("batch_exp", status="expired", counts=(4, 1, 0))
    serve_batch(
        upstream,
        batch,
        input=jsonl(INPUT_LINES[:4]),
        output=jsonl([ok_line("req-2")]),
        errors=jsonl([expired_line("req-1"), expired_line("req-4")]),
    )

    submission = batch_retry_stage(batch=batch, user=submitter, token="tok-exp")

    staged = Path(submission.staged_path).read_bytes()
    assert [json.loads(line)["custom_id"] for line in staged.splitlines()] == [
        "req-1",
        "req-3",
        "req-4",
    ]
    assert submission.facts["retry_reasons"] == {"batch_expired": 2, "never ran": 1}


# --- CSV -------------------------------------------------------------------------------------


def read_csv(chunks: Iterable[str]) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(chunks))))


def test_the_results_csv_has_a_header_and_one_row_per_request(upstream, batch):
    serve_batch(upstream, batch)
    results_ingest(batch=batch)

    table = read_csv(results_csv(batch=batch))

    assert table[0] == [
        "custom_id",
        "status",
        "http_status",
        "answer_or_error",
        "input_tokens",
        "output_tokens",
        "total_tokens",
    ]
    assert [row[0] for row in table[1:]] == [f"req-{i}" for i in range(1, 7)]
    by_id = {row[0]: row for row in table[1:]}
    assert by_id["req-1"] == [
        "req-1",
        "succeeded",
        "200",
        "Paris is the capital of France.",
        "12",
        "7",
        "19",
    ]
    assert by_id["req-3"][1:4] == ["failed", "400", "Invalid 'temperature': must be <= 2."]
    assert by_id["req-5"][1:3] == ["failed", ""]
    assert by_id["req-6"][1] == "never ran"


def test_the_results_csv_carries_the_whole_answer_not_the_preview(upstream, db):
    batch = finished_batch("batch_long", errors=False, counts=(1, 1, 0))
    answer = "A long answer. " * 100
    serve_batch(
        upstream,
        batch,
        input=jsonl(INPUT_LINES[:1]),
        output=jsonl([ok_line("req-1", body=chat_body(answer))]),
    )
    results_ingest(batch=batch)

    assert read_csv(results_csv(batch=batch))[1][3] == answer


@pytest.mark.parametrize("dangerous", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)"])
def test_the_results_csv_neutralises_formula_like_cells(upstream, db, dangerous):
    batch = finished_batch("batch_csv", counts=(2, 1, 1))
    inputs = [input_line(dangerous), input_line("req-2")]
    serve_batch(
        upstream,
        batch,
        input=jsonl(inputs),
        output=jsonl([ok_line(dangerous, body=chat_body(dangerous))]),
        errors=jsonl([http_error_line("req-2", 400, dangerous, "bad")]),
    )
    results_ingest(batch=batch)

    table = read_csv(results_csv(batch=batch))

    cells = [cell for row in table[1:] for cell in row]
    assert f"'{dangerous}" in cells
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in cells), cells


def test_the_results_csv_is_produced_row_by_row(upstream, batch):
    serve_batch(upstream, batch)
    results_ingest(batch=batch)

    rows = results_csv(batch=batch)

    assert isinstance(rows, Iterator)
    assert next(rows).startswith("custom_id,")


def test_the_batch_list_csv_neutralises_labels_and_models(db):
    batch_upsert(
        payload=make_batch(
            id="batch_csv1", model="=cmd|' /C calc'!A0", metadata={"job": "@evil", "x": "y"}
        )
    )

    table = read_csv(batches_csv(Batch.objects.all()))

    assert table[0][:3] == ["batch_id", "status", "endpoint"]
    (row,) = table[1:]
    assert row[0] == "batch_csv1"
    assert "'@evil" in row and "'=cmd|' /C calc'!A0" in row
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in row), row


# --- Retention -------------------------------------------------------------------------------


def test_cleanup_removes_copies_and_rows_unused_past_the_retention(upstream, db, settings):
    settings.RESULT_RETENTION_DAYS = 7
    old = finished_batch("batch_old")
    fresh = finished_batch("batch_fresh")
    for batch in (old, fresh):
        serve_batch(upstream, batch)
        results_ingest(batch=batch)
        batch_summarize(batch=batch)
    old_dir = Path(ResultFile.objects.filter(batch=old).first().path).parent
    ResultFile.objects.filter(batch=old).update(last_used_at=timezone.now() - dt.timedelta(days=8))
    ResultFile.objects.filter(batch=fresh).update(
        last_used_at=timezone.now() - dt.timedelta(days=6)
    )

    assert results_cleanup() == 1

    assert not old_dir.exists()
    assert not ResultFile.objects.filter(batch=old).exists()
    assert not ResultRow.objects.filter(batch=old).exists()
    old.refresh_from_db()
    assert old.results_ingested_at is None
    assert old.result_summary["succeeded"] == 2  # the summary is small and stays
    assert ResultRow.objects.filter(batch=fresh).count() == 6
    assert all(Path(c.path).is_file() for c in ResultFile.objects.filter(batch=fresh))


def test_cleanup_with_nothing_stale_removes_nothing(upstream, batch):
    serve_batch(upstream, batch)
    results_ingest(batch=batch)

    assert results_cleanup() == 0
    assert ResultRow.objects.filter(batch=batch).count() == 6
