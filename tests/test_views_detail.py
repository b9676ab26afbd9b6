"""The batch detail page: every field, a refresh of unfinished batches, and a calm fallback."""

from __future__ import annotations

import datetime as dt
import html

import pytest
import requests
from django.conf import settings
from django.urls import reverse

from batches.models import Batch, Event
from batches.services import batch_upsert
from tests.conftest import load_payload, make_batch

API = settings.OPENAI_BASE_URL
KEY = settings.OPENAI_API_KEY


def detail(openai_id: str) -> str:
    return reverse("batch-detail", args=["default", openai_id])


def utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def running(db) -> Batch:
    return batch_upsert(payload=make_batch(id="batch_run1")).batch


# --- Rendering ----------------------------------------------------------------------------------


def test_a_full_payload_renders_every_field(viewer_client, upstream, submitter):
    payload = load_payload("batch_full.json")
    batch_upsert(payload=payload)

    response = viewer_client.get(detail("batch_full001"))

    assert response.status_code == 200
    content = text(response)
    for value in [
        "batch_full001",
        "quarterly-summaries",  # the label, from metadata `job`
        "/v1/responses",
        "gpt-4.1-mini-2025-04-14",
        "by <bdi>sam</bdi>",  # linked to the user named in batchweb_user; isolated (bidi)
        "file-fullin",
        "file-fullout",
        "file-fullerr",
        "11,000",  # succeeded
        "1,000",  # failed
        "12,000",  # total
        "3,456,789",  # input tokens
        "12,345 cached",
        "987,654",  # output tokens
        "4,321 reasoning",
        "4,444,443",  # total tokens
        "research",  # a metadata value
        "completed with failures",
    ]:
        assert value in content, value
    for step, seconds in [
        ("created", payload["created_at"]),
        ("in progress", payload["in_progress_at"]),
        ("finalizing", payload["finalizing_at"]),
        ("completed", payload["completed_at"]),
    ]:
        assert f'<span class="step">{step}</span>' in content
        assert utc(seconds) in content
    assert "2 h 5 min" in content  # time taken, created to completed
    assert len(upstream.calls) == 0


def test_the_errors_table_shows_line_numbers_codes_messages_and_fields(viewer_client):
    batch_upsert(payload=load_payload("batch_full.json"))

    content = text(viewer_client.get(detail("batch_full001")))

    assert "Errors reported by upstream" in content
    assert "<td>7</td>" in content
    assert "<td>1234</td>" in content
    assert "Missing required parameter: input." in content
    assert "body.temperature" in content


def test_batchweb_bookkeeping_keys_are_kept_out_of_the_metadata_list(viewer_client):
    batch_upsert(payload=load_payload("batch_full.json"))

    content = text(viewer_client.get(detail("batch_full001")))

    facts = content.split('id="h-meta"', 1)[1].split("<details>", 1)[0]
    assert '<dt class="mono"><bdi>team</bdi></dt><dd><bdi>research</bdi></dd>' in facts
    assert "batchweb_token" not in facts
    raw = content.split("<details>", 1)[1]
    assert '"batchweb_token": "tok-full001"' in raw


def test_a_gateway_payload_with_few_keys_renders(viewer_client, upstream):
    batch_upsert(payload=load_payload("batch_failed_minimal.json"))

    response = viewer_client.get(detail("batch-gateway789"))

    assert response.status_code == 200
    content = text(response)
    assert "batch-gateway789" in content
    assert '<span class="badge s-failed">failed</span>' in content
    assert "model not reported" in content
    assert "someone outside batchweb" in content
    assert "Not reported by upstream" in content
    assert "<td>17</td>" in content
    assert "<td>42</td>" in content
    assert "This line is not parseable as valid JSON." in content
    assert '"x_gateway_region": "eu-west"' in content  # unknown keys are kept
    assert "no counts yet" in content
    assert len(upstream.calls) == 0


def test_a_payload_with_only_the_always_present_keys_renders(viewer_client, upstream):
    payload = load_payload("batch_bare.json")
    batch_upsert(payload=payload)

    response = viewer_client.get(detail("batch-bare001"))

    assert response.status_code == 200
    content = text(response)
    assert "batch-bare001" in content
    assert "cancelled" in content
    assert "file-bare001" in content
    assert "/v1/embeddings" in content
    assert utc(payload["created_at"]) in content
    assert "Errors reported by upstream" not in content
    assert "None." in content  # no metadata
    assert "Traceback" not in content
    assert len(upstream.calls) == 0


def test_a_batch_where_every_request_failed_says_so(viewer_client):
    batch_upsert(
        payload=make_batch(
            id="batch_allfail",
            status="completed",
            completed_at=1764003600,
            output_file_id=None,
            error_file_id="file-err1",
            request_counts={"total": 40, "completed": 0, "failed": 40},
        )
    )

    content = text(viewer_client.get(detail("batch_allfail")))

    assert "completed, all failed" in content
    assert "Every request in this batch failed." in content


def test_the_history_lists_who_did_what_to_this_batch(viewer_client, submitter):
    batch = batch_upsert(payload=load_payload("batch_full.json")).batch
    Event.record(Event.Action.CANCEL_FAILED, user=submitter, batch=batch, detail="too late")

    content = text(viewer_client.get(detail("batch_full001")))

    history = content.split('id="h-history"', 1)[1]
    assert "<strong>sam</strong> failed to cancel this batch" in history
    assert "too late" in history


def test_an_unknown_batch_id_is_a_friendly_404(viewer_client, upstream):
    response = viewer_client.get(detail("batch_nope"))

    assert response.status_code == 404
    assert "Not found" in text(response)
    assert len(upstream.calls) == 0


# --- Refresh on open ----------------------------------------------------------------------------


def test_an_unfinished_batch_is_refreshed_from_upstream_when_opened(
    viewer_client, upstream, running
):
    upstream.get(
        f"{API}/batches/batch_run1",
        json=make_batch(
            id="batch_run1",
            status="finalizing",
            finalizing_at=1764003000,
            request_counts={"total": 100, "completed": 97, "failed": 3},
        ),
    )

    response = viewer_client.get(detail("batch_run1"))

    assert response.status_code == 200
    content = text(response)
    assert '<span class="badge s-finalizing">finalizing</span>' in content
    assert "100 / 100" in content
    assert "Could not refresh" not in content
    assert len(upstream.calls) == 1
    assert Batch.objects.get(openai_id="batch_run1").status == "finalizing"


def test_a_refresh_that_finds_the_batch_completed_shows_it_completed(
    viewer_client, upstream, running
):
    upstream.get(
        f"{API}/batches/batch_run1",
        json=make_batch(
            id="batch_run1",
            status="completed",
            completed_at=1764005000,
            output_file_id="file-out1",
            request_counts={"total": 100, "completed": 100, "failed": 0},
        ),
    )

    content = text(viewer_client.get(detail("batch_run1")))

    assert '<span class="badge s-completed">completed</span>' in content
    assert "file-out1" in content
    assert reverse("batch-cancel", args=["default", "batch_run1"]) not in content


def test_a_gateway_id_with_a_dash_is_refreshed_too(viewer_client, upstream):
    batch_upsert(payload=make_batch(id="batch-gw1", status="validating"))
    upstream.get(f"{API}/batches/batch-gw1", json=make_batch(id="batch-gw1", status="in_progress"))

    content = text(viewer_client.get(detail("batch-gw1")))

    assert "in progress" in content
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
def test_a_finished_batch_is_not_refreshed(viewer_client, upstream, status):
    batch_upsert(payload=make_batch(id="batch_end", status=status))

    response = viewer_client.get(detail("batch_end"))

    assert response.status_code == 200
    assert len(upstream.calls) == 0


def test_a_refresh_that_fails_with_500_renders_the_cache_with_the_request_id(
    viewer_client, upstream, running, no_sleep
):
    upstream.get(
        f"{API}/batches/batch_run1",
        status=500,
        json={"error": {"message": "The server had an error", "type": "server_error"}},
        headers={"x-request-id": "req_detail500"},
    )

    response = viewer_client.get(detail("batch_run1"))

    assert response.status_code == 200
    content = text(response)
    assert "Could not refresh this batch from upstream" in content
    assert "HTTP 500" in content
    assert "The server had an error" in content
    assert "req_detail500" in content
    assert "in progress" in content  # the cached status
    assert "42 / 100" in content  # the cached counts
    assert "Traceback" not in content
    # A page does not make someone wait through the full retry budget.
    assert len(upstream.calls) == 2
    assert len(no_sleep) == 1


def test_a_refresh_that_times_out_renders_the_cache_with_a_notice(
    viewer_client, upstream, running, no_sleep
):
    upstream.get(
        f"{API}/batches/batch_run1", body=requests.exceptions.ReadTimeout("read timed out")
    )

    response = viewer_client.get(detail("batch_run1"))

    assert response.status_code == 200
    content = text(response)
    assert "Could not refresh this batch from upstream" in content
    assert "is not available right now" in content
    assert "within the time limit" in content
    assert "ReadTimeout" not in content
    assert "read timed out" not in content
    assert "Traceback" not in content
    assert "batch_run1" in content


def test_a_refresh_refused_with_401_names_the_problem_and_never_shows_the_key(
    viewer_client, upstream, running
):
    upstream.get(
        f"{API}/batches/batch_run1",
        status=401,
        json={
            "error": {
                "message": f"Incorrect API key provided: {KEY}.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        },
        headers={"x-request-id": "req_detail401"},
    )

    response = viewer_client.get(detail("batch_run1"))

    assert response.status_code == 200
    content = text(response)
    assert "refused the credentials" in content
    assert "HTTP 401" in content
    assert "req_detail401" in content
    assert KEY not in content
    assert "Traceback" not in content
    assert len(upstream.calls) == 1


def test_upstream_error_text_is_escaped_on_the_page(viewer_client, upstream, running):
    upstream.get(
        f"{API}/batches/batch_run1",
        status=400,
        json={"error": {"message": "<script>alert(1)</script>", "type": "invalid_request_error"}},
    )

    content = viewer_client.get(detail("batch_run1")).content.decode()

    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_a_refresh_of_a_batch_upstream_no_longer_knows_renders_the_cache(
    viewer_client, upstream, running
):
    upstream.get(
        f"{API}/batches/batch_run1",
        status=404,
        json={"error": {"message": "No batch found with id 'batch_run1'.", "type": "invalid"}},
    )

    response = viewer_client.get(detail("batch_run1"))

    assert response.status_code == 200
    assert "does not know this object" in text(response)
    assert Batch.objects.get(openai_id="batch_run1").status == "in_progress"
