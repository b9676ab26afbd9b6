"""The pages, signed in as a submitter, with the simulator as the upstream over real HTTP."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from batches import services
from batches.models import Batch, Event, Status, Submission, SyncState, default_connection
from tests.integration.conftest import calls

pytestmark = pytest.mark.django_db

ENDPOINT = "/v1/chat/completions"


def cached_running_batch(sim, *, requests: int = 10) -> Batch:
    """A batch running upstream, already in the cache."""
    seeded = sim.seed_batches(count=1, status="in_progress", requests=requests)
    services.batches_sync(connection=default_connection())
    return Batch.objects.get(openai_id=seeded["first_id"])


def test_a_batch_created_through_the_form_exists_upstream_once_with_its_stamps(
    sim, submitter, submitter_client, uploaded_file_id, make_client
):
    form_page = submitter_client.get(reverse("batch-create"))
    token = form_page.context["form"].initial["submission_token"]
    assert re.search(rf'name="submission_token" value="{re.escape(token)}"', form_page.text)
    fields = {
        "input_file_id": uploaded_file_id,
        "endpoint": ENDPOINT,
        "completion_window": "24h",
        "label": "nightly eval",
        "meta_key_0": "team",
        "meta_value_0": "search",
        "submission_token": token,
    }

    response = submitter_client.post(reverse("batch-create"), fields)

    batch = Batch.objects.get(submission_token=token)
    assert response.status_code == 302
    assert response.url == reverse("batch-detail", args=["default", batch.openai_id])
    assert batch.created_by == submitter
    assert batch.status == Status.VALIDATING
    upstream = make_client().retrieve_batch(batch.openai_id)
    assert upstream["input_file_id"] == uploaded_file_id
    assert upstream["metadata"] == {
        "job": "nightly eval",
        "team": "search",
        "batchweb_token": token,
        "batchweb_user": "sam",
    }
    assert Submission.objects.get(token=token).state == Submission.State.DONE

    again = submitter_client.post(reverse("batch-create"), fields)  # a double submit

    assert again.url == response.url
    assert calls(sim, "createBatch") == 1
    assert sim.state()["batches"] == 1


def test_a_create_refused_upstream_shows_the_reason_on_the_form(sim, submitter_client):
    form_page = submitter_client.get(reverse("batch-create"))
    fields = {
        "input_file_id": "file-doesnotexist",
        "endpoint": ENDPOINT,
        "completion_window": "24h",
        "submission_token": form_page.context["form"].initial["submission_token"],
    }

    response = submitter_client.post(reverse("batch-create"), fields)

    assert response.status_code == 400  # upstream says the file id is the person's mistake
    assert "The batch was not created" in response.text
    assert "No such File object: file-doesnotexist" in response.text
    assert not Batch.objects.exists()
    assert Event.objects.filter(action=Event.Action.CREATE_FAILED).count() == 1


def test_the_detail_page_refreshes_a_running_batch_from_the_simulator(sim, submitter_client):
    batch = cached_running_batch(sim, requests=10)
    before = batch.requests_done
    retrieved = calls(sim, "retrieveBatch")
    sim.advance(3)

    page = submitter_client.get(reverse("batch-detail", args=["default", batch.openai_id]))

    shown = page.context["batch"]
    assert page.status_code == 200
    assert page.context["refresh_error"] is None
    assert shown.status == Status.IN_PROGRESS
    assert shown.requests_done > before
    assert Batch.objects.get(pk=batch.pk).requests_done == shown.requests_done
    assert calls(sim, "retrieveBatch") - retrieved == 1

    sim.advance(20)
    finished = submitter_client.get(reverse("batch-detail", args=["default", batch.openai_id]))

    assert finished.context["batch"].status == Status.COMPLETED
    assert finished.context["batch"].output_file_id in finished.text


def test_a_running_batch_is_cancelled_from_its_page_and_ends_cancelled(sim, operator_client):
    batch = cached_running_batch(sim, requests=20)
    cancel_url = reverse("batch-cancel", args=["default", batch.openai_id])
    detail_url = reverse("batch-detail", args=["default", batch.openai_id])
    assert operator_client.get(cancel_url).status_code == 200

    response = operator_client.post(cancel_url)

    assert response.status_code == 302 and response.url == detail_url
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message.startswith("Cancellation requested")
    assert Batch.objects.get(pk=batch.pk).status == Status.CANCELLING
    assert calls(sim, "cancelBatch") == 1
    assert Event.objects.filter(action=Event.Action.CANCEL, batch=batch).exists()

    sim.advance(4)
    page = operator_client.get(detail_url)

    assert page.context["batch"].status == Status.CANCELLED
    assert not page.context["can_cancel"]


def test_the_sync_now_button_fills_the_list_from_the_simulator(sim, operator_client):
    seeded = sim.seed_batches(count=7, status="completed")

    response = operator_client.post(reverse("batch-sync"), {"next": reverse("batch-list")})

    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Synced: 7 new, 0 changed, 0 running batches refreshed."
    ]
    assert Batch.objects.count() == 7
    listing = operator_client.get(reverse("batch-list"))
    assert seeded["first_id"] in listing.text and seeded["last_id"] in listing.text


def test_the_sync_now_button_during_an_outage_says_so_and_keeps_the_cache(sim, operator_client):
    sim.seed_batches(count=3, status="completed")
    services.batches_sync(connection=default_connection())
    sim.set_faults({"server_error": 100})

    response = operator_client.post(reverse("batch-sync"), follow=True)

    assert response.status_code == 200
    assert "Sync failed; the list shows what was cached before" in response.text
    assert "Upstream is failing" in response.text
    assert len(response.context["batches"]) == 3
    assert SyncState.get(default_connection()).is_failing


def test_the_detail_page_shows_the_cached_copy_with_a_notice_when_the_simulator_fails(
    sim, submitter_client, waits
):
    batch = cached_running_batch(sim)
    retrieved = calls(sim, "retrieveBatch")
    sim.set_faults({"server_error": 100})

    page = submitter_client.get(reverse("batch-detail", args=["default", batch.openai_id]))

    assert page.status_code == 200
    assert page.context["batch"].status == Status.IN_PROGRESS
    assert "HTTP 500" in page.context["refresh_error"]
    assert "Could not refresh this batch from upstream" in page.text
    assert calls(sim, "retrieveBatch") - retrieved == 2  # a page retries once at most
    assert len(waits) == 1


def test_the_detail_page_gives_up_on_a_slow_simulator_at_the_page_timeout(
    sim, submitter_client, settings
):
    batch = cached_running_batch(sim)
    settings.OPENAI_PAGE_TIMEOUT = 0.2
    sim.set_faults({"latency": 1})

    page = submitter_client.get(reverse("batch-detail", args=["default", batch.openai_id]))

    assert page.status_code == 200
    assert "no answer from" in page.context["refresh_error"]
    assert page.context["batch"].openai_id == batch.openai_id
    assert batch.openai_id in page.text
