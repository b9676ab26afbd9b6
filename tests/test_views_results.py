"""The pages of issue 5: downloads, the summary on the batch page, the results table, one result,
retrying what did not succeed, and the CSV exports.

Upstream is the `responses` mock (see tests/test_result_files.py for the canned batch: six
requests, two succeeded, three failed, one never ran). Local copies go to a temporary DATA_DIR.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from responses import matchers

from batches.models import Batch, Event, ResultFile, ResultRow, Submission
from batches.services.batches import batch_upsert
from tests.conftest import make_batch
from tests.test_result_files import (
    API,
    CHAT,
    ERRORS,
    INPUT,
    INPUT_LINES,
    OUTPUT,
    LazyBody,
    big_output,
    finished_batch,
    gone,
    input_line,
    jsonl,
    serve,
    serve_batch,
)
from tests.test_results import chat_body, http_error_line, ok_line


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


@pytest.fixture
def batch(db) -> Batch:
    return finished_batch()


def text(response) -> str:
    return html.unescape(response.content.decode())


def plain(response) -> str:
    """The page's text without tags, spaces collapsed: what a person reads."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def detail_url(openai_id: str = "batch_done1") -> str:
    return reverse("batch-detail", args=["default", openai_id])


def results_url(openai_id: str = "batch_done1", **params: str) -> str:
    url = reverse("batch-results", args=["default", openai_id])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def download_url(kind: str, openai_id: str = "batch_done1") -> str:
    return reverse("batch-download", args=["default", openai_id, kind])


def shown_ids(response) -> list[str]:
    """The custom_ids of the results table, in order."""
    return [
        html.unescape(m)
        for m in re.findall(r'<td data-label="custom_id"><a [^>]*title="([^"]*)"', text(response))
    ]


def read_csv(response) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


# --- Downloads -------------------------------------------------------------------------------


def test_a_download_streams_with_the_batch_id_in_its_name_and_a_jsonl_type(
    viewer_client, upstream, batch
):
    body = LazyBody(big_output(3000))  # about 3 MB
    serve(upstream, batch.output_file_id, io.BufferedReader(body))

    response = viewer_client.get(download_url("output"))

    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse) and response.streaming
    assert response["Content-Type"].startswith("application/jsonl")
    assert response["Content-Disposition"] == 'attachment; filename="batch_done1_output.jsonl"'
    assert body.produced < 1 << 20  # the view handed on an iterator; nothing read whole
    content = b"".join(response.streaming_content)
    assert content.count(b"\n") == 3000 and body.produced == len(content)
    assert Event.objects.get(action=Event.Action.DOWNLOAD).detail == "output file"


def test_a_download_comes_from_the_local_copy_when_there_is_one(viewer_client, upstream, batch):
    serve_batch(upstream, batch)
    viewer_client.get(results_url())  # fetches the copies
    upstream.calls.reset()

    for kind, expected in (("input", INPUT), ("output", OUTPUT), ("error", ERRORS)):
        response = viewer_client.get(download_url(kind))
        assert response.streaming
        assert response["Content-Length"] == str(len(expected))
        assert response["Content-Disposition"].endswith(f'filename="batch_done1_{kind}.jsonl"')
        assert b"".join(response.streaming_content) == expected
    assert len(upstream.calls) == 0


def test_a_file_gone_upstream_is_a_message_on_the_batch_page_not_a_crash(
    viewer_client, upstream, batch
):
    gone(upstream, batch.output_file_id)

    response = viewer_client.get(download_url("output"))

    assert response.status_code == 302
    assert response["Location"] == detail_url()
    page = viewer_client.get(response["Location"])
    assert page.status_code == 200
    assert "The output file no longer exists upstream" in plain(page)


def test_an_unknown_kind_of_file_is_not_found(viewer_client, upstream, batch):
    assert viewer_client.get(download_url("secrets")).status_code == 404
    assert len(upstream.calls) == 0


def test_downloads_need_a_signed_in_person(client, upstream, batch):
    response = client.get(download_url("output"))

    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert len(upstream.calls) == 0


# --- The summary on the batch page -----------------------------------------------------------


def test_the_summary_is_computed_once_and_shown_on_the_batch_page(viewer_client, upstream, batch):
    limited = http_error_line("x", 429, "Rate limit reached.", "rate_limit_exceeded")
    many_errors = ERRORS + jsonl({**limited, "custom_id": f"x{i}"} for i in range(3))
    Batch.objects.filter(pk=batch.pk).update(request_total=9, request_failed=6)
    serve_batch(upstream, batch, errors=many_errors)

    assert viewer_client.get(results_url()).status_code == 200
    fetched = len(upstream.calls)
    page = plain(viewer_client.get(detail_url()))
    viewer_client.get(results_url())
    viewer_client.get(detail_url())

    assert len(upstream.calls) == fetched == 3  # stored: later views make no upstream call
    assert "What the batch produced" in page
    assert "By HTTP status" in page and "By error code" in page
    assert "Succeeded 2 " in page
    assert "Failed 6 " in page
    assert "Never ran 1 " in page
    for row in ("HTTP 429 3", "HTTP 400 1", "HTTP 500 1", "rate_limit_exceeded 3",
                "invalid_value 1", "batch_expired 1", "unknown 1"):  # fmt: skip
        assert row in page, row
    top = re.search(r"Most common errors (.*?) Retries|Most common errors (.*?) Metadata", page)
    assert top, page
    listed = top.group(1) or top.group(2)
    times = "\N{MULTIPLICATION SIGN}"
    assert listed.startswith(f"Rate limit reached. {times} 3")
    assert listed.count(f"{times} 1") == 2  # then two of the messages seen once


def test_a_batch_completed_with_every_request_failed_is_unmistakable(viewer_client, upstream, db):
    batch = finished_batch("batch_allfail", output=False, counts=(3, 0, 3))
    serve_batch(
        upstream,
        batch,
        errors=jsonl([http_error_line(f"req-{i}") for i in range(1, 4)]),
    )
    finished_batch("batch_fine", counts=(6, 6, 0))

    page = viewer_client.get(detail_url("batch_allfail"))
    listing = viewer_client.get(reverse("batch-list"))

    assert "Every request in this batch failed" in plain(page)
    assert '<span class="badge s-failed">completed, all failed</span>' in text(page)
    row = re.search(
        r'<tr id="row-\d+" data-batch-id="batch_allfail">(.*?)</tr>', text(listing), re.S
    ).group(1)
    assert "completed, all failed" in row and "s-failed" in row
    fine = re.search(
        r'<tr id="row-\d+" data-batch-id="batch_fine">(.*?)</tr>', text(listing), re.S
    ).group(1)
    assert "all failed" not in fine


def test_a_batch_whose_counts_are_missing_is_flagged_by_its_summary(viewer_client, upstream, db):
    """A compatible server that sends no request_counts: the summary still tells."""
    batch = finished_batch("batch_nocounts", output=False, counts=(3, 0, 3))
    Batch.objects.filter(pk=batch.pk).update(
        request_total=None, request_completed=None, request_failed=None
    )
    serve_batch(upstream, batch, errors=jsonl([http_error_line("req-1")]))
    viewer_client.get(results_url("batch_nocounts"))

    assert "Every request in this batch failed" in plain(
        viewer_client.get(detail_url("batch_nocounts"))
    )


def test_a_file_gone_when_opening_the_results_is_a_message_not_a_crash(
    viewer_client, upstream, batch
):
    serve_batch(upstream, batch, output=None)

    response = viewer_client.get(results_url())

    assert response.status_code == 302 and response["Location"] == detail_url()
    page = viewer_client.get(detail_url())
    assert page.status_code == 200
    assert "no longer exists upstream" in plain(page)
    assert not ResultRow.objects.exists()


def test_the_results_of_a_running_batch_wait_for_it_to_finish(viewer_client, upstream, db):
    batch_upsert(payload=make_batch(id="batch_running"))
    upstream.get(f"{API}/batches/batch_running", json=make_batch(id="batch_running"))

    response = viewer_client.get(results_url("batch_running"))

    assert response.status_code == 302
    assert messages_of(response) == ["Results can be read once the batch has finished."]


# --- The results table -----------------------------------------------------------------------


def test_the_results_table_joins_results_to_the_input_in_input_order(
    viewer_client, upstream, batch
):
    serve_batch(upstream, batch)

    response = viewer_client.get(results_url())

    assert response.status_code == 200
    assert shown_ids(response) == [f"req-{i}" for i in range(1, 7)]
    page = plain(response)
    assert "6 requests · 4 did not succeed" in page
    assert "Question req-1" in page  # the start of the request
    assert "Paris is the capital of France." in page  # the answer text
    assert "Answer two, sent as a string" in page  # a body sent as a JSON string
    assert "invalid_value Invalid 'temperature': must be <= 2." in page
    assert "The server had an error." in page  # an error with only a message
    assert "batch_expired" in page
    assert "req-6 never ran Question req-6 This request never ran." in page
    assert "19" in page  # tokens of req-1


def test_unreadable_lines_are_shown_as_rows_not_a_500(viewer_client, upstream, db):
    finished_batch("batch_junk", counts=(2, 1, 0))
    batch = Batch.objects.get(openai_id="batch_junk")
    serve_batch(
        upstream,
        batch,
        input=jsonl(INPUT_LINES[:2]),
        output=jsonl([ok_line("req-1"), b"\xff\xfe not json\n"]),
        errors=b"",
    )

    response = viewer_client.get(results_url("batch_junk"))

    assert response.status_code == 200
    assert "This line of the file is not valid JSON." in plain(response)
    row = ResultRow.objects.get(batch=batch, custom_id__startswith="(unreadable")
    one = viewer_client.get(reverse("batch-result", args=["default", "batch_junk", row.pk]))
    assert one.status_code == 200


@pytest.fixture
def big(upstream, db) -> Batch:
    """A finished batch of 120 requests: every seventh failed, the last five never ran."""
    batch = finished_batch("batch_big", counts=(120, 98, 17))
    inputs = [input_line(f"item-{i:03d}", f"Tell me about topic {i}") for i in range(120)]
    outputs, errors = [], []
    for i in range(115):
        if i % 7 == 0:
            errors.append(http_error_line(f"item-{i:03d}", 400, f"Bad topic {i}", "invalid_value"))
        else:
            outputs.append(ok_line(f"item-{i:03d}", body=chat_body(f"Topic {i} is about owls")))
    outputs.reverse()  # answers in no particular order
    serve_batch(upstream, batch, input=jsonl(inputs), output=jsonl(outputs), errors=jsonl(errors))
    return batch


def test_the_results_are_paged_fifty_at_a_time(viewer_client, big):
    first = viewer_client.get(results_url("batch_big"))
    third = viewer_client.get(results_url("batch_big", page="3"))
    beyond = viewer_client.get(results_url("batch_big", page="99"))

    assert shown_ids(first) == [f"item-{i:03d}" for i in range(50)]
    assert "page 1 of 3" in plain(first)
    assert shown_ids(third) == [f"item-{i:03d}" for i in range(100, 120)]
    assert shown_ids(beyond) == shown_ids(third)  # past the end: the last page
    assert "never ran" in plain(third)
    assert 'rel="next"' in text(first) and 'rel="next"' not in text(third)


def test_the_results_can_be_searched_by_custom_id_or_text(viewer_client, big):
    by_id = viewer_client.get(results_url("batch_big", q="item-042"))
    by_answer = viewer_client.get(results_url("batch_big", q="topic+5+is"))
    by_request = viewer_client.get(results_url("batch_big", q="about+topic+11"))
    by_error = viewer_client.get(results_url("batch_big", q="Bad+topic+7"))
    nothing = viewer_client.get(results_url("batch_big", q="zebra"))

    assert shown_ids(by_id) == ["item-042"]
    assert shown_ids(by_answer) == ["item-005"]
    assert shown_ids(by_request) == [f"item-{i}" for i in ("011", "110", "111", "112", "113",
                                                          "114", "115", "116", "117", "118",
                                                          "119")]  # fmt: skip
    assert shown_ids(by_error) == ["item-007", "item-070", "item-077"]
    assert "Nothing matches." in plain(nothing)


def test_a_search_counts_its_matches_and_pages_them(viewer_client, big):
    page_one = viewer_client.get(results_url("batch_big", q="owls"))
    page_two = viewer_client.get(results_url("batch_big", q="owls", page="2"))
    beyond = viewer_client.get(results_url("batch_big", q="owls", page="7"))
    absurd = viewer_client.get(results_url("batch_big", q="owls", page="9" * 30))
    junk = viewer_client.get(results_url("batch_big", q="owls", page="last"))

    succeeded = [f"item-{i:03d}" for i in range(115) if i % 7]
    assert "98 requests matching “owls”" in plain(page_one)
    assert shown_ids(page_one) == succeeded[:50]
    assert "page 2 of 2" in plain(page_two)
    assert shown_ids(page_two) == succeeded[50:]
    assert shown_ids(beyond) == shown_ids(absurd) == succeeded[50:]  # the last page
    assert shown_ids(junk) == succeeded[:50]


def test_the_results_can_show_failures_only(viewer_client, big):
    failures = viewer_client.get(results_url("batch_big", failed="1"))
    page_two = viewer_client.get(results_url("batch_big", failed="1", page="2"))

    failed = [f"item-{i:03d}" for i in range(0, 115, 7)] + [f"item-{i}" for i in range(115, 120)]
    assert shown_ids(failures) == failed  # 17 failed + 5 never ran, one page
    assert "22 requests that did not succeed" in plain(failures)
    assert "· 22 did not succeed" not in plain(failures)
    assert shown_ids(page_two) == failed
    combined = viewer_client.get(results_url("batch_big", failed="1", q="item-11"))
    assert shown_ids(combined) == ["item-112"] + [f"item-{i}" for i in range(115, 120)]


def test_the_filters_are_kept_across_pages(viewer_client, big):
    response = viewer_client.get(results_url("batch_big", q="item", failed="1"))

    assert shown_ids(response)  # one page only: no link needed
    first = viewer_client.get(results_url("batch_big", q="item"))
    assert 'href="?q=item&amp;page=2"' in first.content.decode()


def test_opening_the_results_again_reads_nothing_upstream(viewer_client, upstream, big):
    viewer_client.get(results_url("batch_big"))
    fetched = len(upstream.calls)

    viewer_client.get(results_url("batch_big", page="2"))
    viewer_client.get(results_url("batch_big", failed="1"))

    assert len(upstream.calls) == fetched


def test_viewing_results_counts_as_using_the_local_copies(viewer_client, big):
    viewer_client.get(results_url("batch_big"))
    long_ago = timezone.now() - timezone.timedelta(days=30)
    ResultFile.objects.update(last_used_at=long_ago)

    viewer_client.get(results_url("batch_big", page="2"))

    assert all(c.last_used_at > long_ago for c in ResultFile.objects.all())


# --- One result ------------------------------------------------------------------------------


def result_url(batch: Batch, custom_id: str) -> str:
    row = ResultRow.objects.get(batch=batch, custom_id=custom_id)
    return reverse("batch-result", args=["default", batch.openai_id, row.pk])


def test_one_result_pretty_prints_its_request_and_response(viewer_client, upstream, batch):
    serve_batch(upstream, batch)
    viewer_client.get(results_url())

    response = viewer_client.get(result_url(batch, "req-2"))

    assert response.status_code == 200
    page = text(response)
    assert '"custom_id": "req-2"' in page
    assert '"content": "Question req-2"' in page  # the request, indented
    # The body sent as a JSON string is shown decoded, as an object.
    assert '"content": "Answer two, sent as a string"' in page
    assert '\\"content\\"' not in page
    assert re.search(r'\n {2,}"status_code": 200', page)
    assert "succeeded · 200" in page


def test_one_failed_or_never_run_result_says_why(viewer_client, upstream, batch):
    serve_batch(upstream, batch)
    viewer_client.get(results_url())

    failed = plain(viewer_client.get(result_url(batch, "req-3")))
    never = plain(viewer_client.get(result_url(batch, "req-6")))

    assert "failed · 400" in failed
    assert "invalid_value : Invalid 'temperature': must be <= 2." in failed
    assert "never ran" in never
    assert "This request never ran, so there is no response." in never


def test_a_result_of_another_batch_is_not_found(viewer_client, upstream, batch):
    serve_batch(upstream, batch)
    viewer_client.get(results_url())
    other = finished_batch("batch_other")
    row = ResultRow.objects.filter(batch=batch).first()

    url = reverse("batch-result", args=["default", other.openai_id, row.pk])
    assert viewer_client.get(url).status_code == 404


# --- Retry -----------------------------------------------------------------------------------


def retry_url(openai_id: str = "batch_done1") -> str:
    return reverse("batch-retry", args=["default", openai_id])


def test_the_retry_button_shows_for_submitters_not_viewers(
    submitter_client, upstream, batch, viewer
):
    serve_batch(upstream, batch)
    submitter_client.get(results_url())

    assert "Retry what did not succeed…" in text(submitter_client.get(detail_url()))
    assert "Retry the 4 that did not succeed…" in text(submitter_client.get(results_url()))
    submitter_client.force_login(viewer)
    assert "Retry" not in text(submitter_client.get(detail_url()))
    assert "Retry" not in text(submitter_client.get(results_url()))


def test_a_viewer_may_not_retry(viewer_client, upstream, batch):
    response = viewer_client.post(retry_url())

    assert response.status_code == 403
    assert not Submission.objects.exists()
    assert len(upstream.calls) == 0


def test_retrying_shows_how_many_and_why_then_creates_a_batch_linked_to_its_origin(
    submitter_client, upstream, batch
):
    serve_batch(upstream, batch)

    response = submitter_client.post(retry_url())

    assert response.status_code == 302
    submission = Submission.objects.get()
    assert response["Location"] == reverse("submission-confirm", args=[submission.token])
    assert Path(submission.staged_path).read_bytes() == jsonl(INPUT_LINES[2:])
    confirm = plain(submitter_client.get(response["Location"]))
    assert "A new batch of the 4 requests that did not succeed" in confirm
    assert "Retry of batch_done1" in confirm
    for reason in ("1 invalid_value", "1 HTTP 500", "1 batch_expired", "1 never ran"):
        assert reason in confirm, reason

    upstream.post(
        f"{API}/files",
        json={
            "id": "file-retry1",
            "object": "file",
            "bytes": 4,
            "created_at": 1764000000,
            "filename": "batch_done1_retry.jsonl",
            "purpose": "batch",
            "status": "processed",
        },
    )
    upstream.post(
        f"{API}/batches",
        json=make_batch(
            id="batch_retry1",
            status="validating",
            input_file_id="file-retry1",
            request_counts={"total": 0, "completed": 0, "failed": 0},
            metadata={"job": "nightly-eval", "retry_of": "batch_done1"},
        ),
        match=[matchers.json_params_matcher({"input_file_id": "file-retry1"}, strict_match=False)],
    )
    created = submitter_client.post(response["Location"])

    assert created.status_code == 302 and created["Location"] == detail_url("batch_retry1")
    retry = Batch.objects.get(openai_id="batch_retry1")
    assert retry.retry_of == batch
    assert retry.input_lines == 4
    sent = json.loads(upstream.calls[-1].request.body)
    assert sent["metadata"]["retry_of"] == "batch_done1"
    assert sent["endpoint"] == CHAT
    upstream.get(f"{API}/batches/batch_retry1", json=make_batch(id="batch_retry1"))
    new_page = plain(submitter_client.get(detail_url("batch_retry1")))
    assert "This batch retries batch_done1" in new_page
    origin = text(submitter_client.get(detail_url()))
    assert "Retries" in origin and 'href="/connections/default/batches/batch_retry1/"' in origin


def test_retrying_a_batch_where_everything_succeeded_says_there_is_nothing_to_retry(
    submitter_client, upstream, db
):
    batch = finished_batch("batch_all_ok", errors=False, counts=(2, 2, 0))
    serve_batch(upstream, batch, input=jsonl(INPUT_LINES[:2]))
    submitter_client.get(results_url("batch_all_ok"))

    assert "Retry" not in text(submitter_client.get(detail_url("batch_all_ok")))
    response = submitter_client.post(retry_url("batch_all_ok"))

    assert response.status_code == 302 and response["Location"] == detail_url("batch_all_ok")
    (message,) = messages_of(response)
    assert "nothing to retry" in message
    assert not Submission.objects.exists()


def test_a_retry_whose_input_file_is_gone_says_so(submitter_client, upstream, batch):
    gone(upstream, batch.input_file_id)

    response = submitter_client.post(retry_url(), follow=True)

    assert response.status_code == 200
    assert "The input file no longer exists upstream" in plain(response)


# --- CSV exports -----------------------------------------------------------------------------


def test_the_results_export_is_a_streamed_csv_of_every_request(viewer_client, upstream, db):
    batch = finished_batch("batch_csv", counts=(3, 1, 1))
    serve_batch(
        upstream,
        batch,
        input=jsonl([input_line("=cmd()"), input_line("req-2"), input_line("req-3")]),
        output=jsonl([ok_line("=cmd()", body=chat_body("+ plus sign first"))]),
        errors=jsonl([http_error_line("req-2", 400, "@mention is not allowed", "bad")]),
    )

    response = viewer_client.get(reverse("batch-results-csv", args=["default", "batch_csv"]))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="batch_csv_results.csv"'
    table = read_csv(response)
    assert table[0][:4] == ["custom_id", "status", "http_status", "answer_or_error"]
    assert table[1:] == [
        ["'=cmd()", "succeeded", "200", "'+ plus sign first", "10", "3", "13"],
        ["req-2", "failed", "400", "'@mention is not allowed", "", "", ""],
        ["req-3", "never ran", "", "This request never ran.", "", "", ""],
    ]


def test_the_list_export_applies_the_filters_and_streams(viewer_client, db):
    batch_upsert(payload=make_batch(id="batch_run1", metadata={"job": "=evil()"}))
    finished_batch("batch_fin1")
    finished_batch("batch_fin2", status="failed", output=False, errors=False)

    everything = read_csv(viewer_client.get(reverse("batch-export")))
    completed = read_csv(viewer_client.get(reverse("batch-export") + "?status=completed"))
    searched = read_csv(viewer_client.get(reverse("batch-export") + "?q=fin2"))

    assert everything[0][0] == "batch_id"
    assert sorted(row[0] for row in everything[1:]) == ["batch_fin1", "batch_fin2", "batch_run1"]
    assert [row[0] for row in completed[1:]] == ["batch_fin1"]
    assert [row[0] for row in searched[1:]] == ["batch_fin2"]
    run = next(row for row in everything[1:] if row[0] == "batch_run1")
    assert "'=evil()" in run
