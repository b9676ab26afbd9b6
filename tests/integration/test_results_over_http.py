import json
from pathlib import Path

from django.urls import reverse

from batches.models import Batch, ResultRow, Submission
from batches.services import batches as batch_services
from batches.services import connections as connection_services
from tests.integration.conftest import chat_line


def test_a_finished_batch_can_be_read_exported_downloaded_and_retried(
    sim, submitter_client, submitter, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    lines = [chat_line(f"req-{i}") for i in range(1, 6)] + [chat_line("req-6-fail")]
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(line) + "\n" for line in lines))
    client = connection_services.get_client()
    with p.open("rb") as f:
        fid = client.upload_file(fileobj=f, filename="in.jsonl")["id"]
    b = batch_services.batch_create(
        user=submitter, input_file_id=fid, endpoint="/v1/chat/completions"
    )
    sim.advance(100)
    b = batch_services.batch_refresh(batch=b)
    assert b.status == "completed", b.status
    r = submitter_client.get(reverse("batch-results", args=["default", b.openai_id]))
    assert r.status_code == 200, r
    c = r.content.decode()
    assert "req-6-fail" in c
    assert ResultRow.objects.filter(batch=b).count() == 6
    b.refresh_from_db()
    assert b.result_summary["succeeded"] == 5, b.result_summary
    r = submitter_client.get(reverse("batch-detail", args=["default", b.openai_id]))
    assert "What the batch produced" in r.content.decode()
    row = ResultRow.objects.get(batch=b, custom_id="req-6-fail")
    r = submitter_client.get(reverse("batch-result", args=["default", b.openai_id, row.pk]))
    assert r.status_code == 200
    r = submitter_client.get(reverse("batch-results", args=["default", b.openai_id]) + "?failed=1")
    assert "req-1" not in r.content.decode().replace("req-6-fail", "")
    r = submitter_client.get(reverse("batch-results-csv", args=["default", b.openai_id]))
    body = b"".join(r.streaming_content).decode()
    assert body.count("\n") == 7, body
    r = submitter_client.get(reverse("batch-download", args=["default", b.openai_id, "output"]))
    out = b"".join(r.streaming_content)
    assert out.count(b"\n") == 5
    r = submitter_client.post(reverse("batch-retry", args=["default", b.openai_id]))
    assert r.status_code == 302, r.content
    r = submitter_client.get(r["Location"])
    c = r.content.decode()
    assert "1" in c and "Retry of" in c, c
    r = submitter_client.post(r.request["PATH_INFO"])
    assert r.status_code == 302, r.content.decode()[:2000]
    nb = Batch.objects.get(retry_of=b)
    assert nb.input_lines == 1
    r = submitter_client.get(reverse("batch-export"))
    assert b"batch_id" in b"".join(r.streaming_content)


# --- More of issue 5 against the simulator ---------------------------------------------------


def _finished(sim, submitter, tmp_path, lines, *, advance=100.0, name="in.jsonl"):
    """Upload `lines` to the simulator, create a batch, run it to its end, cache it."""
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    client = connection_services.get_client()
    with path.open("rb") as handle:
        file_id = client.upload_file(fileobj=handle, filename=name)["id"]
    batch = batch_services.batch_create(
        user=submitter, input_file_id=file_id, endpoint="/v1/chat/completions"
    )
    if advance:
        sim.advance(advance)
    return batch_services.batch_refresh(batch=batch)


def test_quirky_result_files_are_read_as_well_as_standard_ones(
    sim, submitter_client, submitter, tmp_path, settings
):
    """Bodies sent as JSON strings and errors with only a message, as some gateways send."""
    settings.DATA_DIR = tmp_path
    sim.set_faults({"quirks": {"body_as_string": True, "errors_message_only": True}})
    lines = [chat_line("a-1", "Hello owls"), chat_line("b-fail"), chat_line("c-fail-500")]
    b = _finished(sim, submitter, tmp_path, lines)
    assert b.status == "completed", b.status

    r = submitter_client.get(reverse("batch-results", args=["default", b.openai_id]))
    assert r.status_code == 200
    b.refresh_from_db()
    s = b.result_summary
    assert (s["succeeded"], s["failed"], s["never_ran"]) == (1, 2, 0), s
    assert s["failed_by_status"] == {"400": 1, "500": 1}, s
    row = ResultRow.objects.get(batch=b, custom_id="a-1")
    assert row.ok and "Hello owls" in row.answer_preview
    r = submitter_client.get(reverse("batch-result", args=["default", b.openai_id, row.pk]))
    page = r.content.decode()
    assert "&quot;choices&quot;: [" in page  # the string body shown decoded, as an object


def test_an_expired_batch_retries_what_expired_as_well_as_what_failed(
    sim, submitter_client, submitter, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    lines = [chat_line(f"req-{i}") for i in range(1, 9)] + [chat_line("req-9-fail")]
    b = _finished(sim, submitter, tmp_path, lines, advance=0)
    sim.advance(2 + 4.5)  # validating, then about four requests done
    sim.expire_batch(b.openai_id)
    b = batch_services.batch_refresh(batch=b)
    assert b.status == "expired", b.status

    r = submitter_client.get(reverse("batch-results", args=["default", b.openai_id]) + "?failed=1")
    assert r.status_code == 200
    b.refresh_from_db()
    expired = b.result_summary["failed_by_code"].get("batch_expired", 0)
    succeeded = b.result_summary["succeeded"]
    assert expired > 0 and succeeded > 0, b.result_summary
    assert succeeded + b.result_summary["failed"] == 9

    r = submitter_client.post(reverse("batch-retry", args=["default", b.openai_id]))
    assert r.status_code == 302, r
    submission = Submission.objects.get(retry_of=b)
    staged = Path(submission.staged_path).read_bytes()
    origin = "".join(json.dumps(line) + "\n" for line in lines).encode().splitlines(keepends=True)
    succeeded_ids = set(
        ResultRow.objects.filter(batch=b, ok=True).values_list("custom_id", flat=True)
    )
    expected = [line for line in origin if json.loads(line)["custom_id"] not in succeeded_ids]
    assert staged == b"".join(expected)
    assert submission.facts["retry_reasons"]["batch_expired"] == expired
    confirm = submitter_client.get(r["Location"]).content.decode()
    assert f"{len(expected)} requests that did not succeed" in confirm


def test_an_output_file_deleted_upstream_is_reported_not_a_crash(
    sim, submitter_client, submitter, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    b = _finished(sim, submitter, tmp_path, [chat_line("req-1"), chat_line("req-2")])
    connection_services.get_client().delete_file(b.output_file_id)

    r = submitter_client.get(reverse("batch-download", args=["default", b.openai_id, "output"]))
    assert r.status_code == 302
    page = submitter_client.get(r["Location"]).content.decode()
    assert "no longer exists upstream" in page

    r = submitter_client.get(reverse("batch-results", args=["default", b.openai_id]))
    assert r.status_code == 302
    assert "no longer exists upstream" in submitter_client.get(r["Location"]).content.decode()


def test_downloads_over_http_stream_and_then_come_from_the_local_copy(
    sim, submitter_client, submitter, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    b = _finished(sim, submitter, tmp_path, [chat_line(f"req-{i}") for i in range(1, 4)])

    r = submitter_client.get(reverse("batch-download", args=["default", b.openai_id, "output"]))
    assert r.streaming and r["Content-Type"].startswith("application/jsonl")
    assert r["Content-Disposition"] == f'attachment; filename="{b.openai_id}_output.jsonl"'
    first = b"".join(r.streaming_content)
    assert first.count(b"\n") == 3

    submitter_client.get(
        reverse("batch-results", args=["default", b.openai_id])
    )  # makes the local copies
    before = sim.state()["calls"]["downloadFile"]
    r = submitter_client.get(reverse("batch-download", args=["default", b.openai_id, "output"]))
    assert b"".join(r.streaming_content) == first
    assert sim.state()["calls"]["downloadFile"] == before
