"""The pages, signed in as a submitter, with the simulator as the upstream over real HTTP."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from batches.models import Batch, Event, Status, Submission, SyncState, default_connection
from batches.services import sync as sync_services
from tests.integration.conftest import calls

pytestmark = pytest.mark.django_db

ENDPOINT = "/v1/chat/completions"


def cached_running_batch(sim, *, requests: int = 10) -> Batch:
    """A batch running upstream, already in the cache."""
    seeded = sim.seed_batches(count=1, status="in_progress", requests=requests)
    sync_services.batches_sync(connection=default_connection())
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


def test_a_running_batch_page_asks_the_worker_whose_next_pass_brings_the_progress(
    sim, submitter_client
):
    batch = cached_running_batch(sim, requests=10)
    before = batch.requests_done
    Batch.objects.filter(pk=batch.pk).update(synced_at=timezone.now() - dt.timedelta(minutes=1))
    retrieved = calls(sim, "retrieveBatch")
    sim.advance(3)
    url = reverse("batch-detail", args=["default", batch.openai_id])

    page = submitter_client.get(url)

    assert page.status_code == 200
    assert page.context["batch"].requests_done == before  # the cache, as it was
    assert calls(sim, "retrieveBatch") == retrieved  # the page asked upstream nothing
    assert Batch.objects.get(pk=batch.pk).next_refresh_at <= timezone.now()  # but the worker

    sync_services.sync_pass(connection=default_connection())
    fresh = submitter_client.get(url)

    # The pass's list walk may bring it (and reschedule it) before its retrieves: one call, or
    # none, for every look.
    assert calls(sim, "retrieveBatch") - retrieved <= 1
    assert fresh.context["batch"].status == Status.IN_PROGRESS
    assert fresh.context["batch"].requests_done > before


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
    operator_client.post(reverse("batch-sync"), {"next": detail_url})  # Sync now
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
    sync_services.batches_sync(connection=default_connection())
    sim.set_faults({"server_error": 100})

    response = operator_client.post(reverse("batch-sync"), follow=True)

    assert response.status_code == 200
    assert "Sync failed; the list shows what was cached before" in response.text
    assert "Upstream is failing" in response.text
    assert len(response.context["batches"]) == 3
    assert SyncState.get(default_connection()).is_failing


def test_a_failing_simulator_shows_on_the_batch_page_as_the_workers_note(
    sim, submitter_client, waits
):
    batch = cached_running_batch(sim)
    sim.set_faults({"server_error": 100})
    sync_services.sync_pass(connection=default_connection())  # the worker meets the outage
    retrieved = calls(sim, "retrieveBatch")

    page = submitter_client.get(reverse("batch-detail", args=["default", batch.openai_id]))

    assert page.status_code == 200
    assert page.context["batch"].status == Status.IN_PROGRESS
    assert "Upstream is failing" in page.text  # the banner, with upstream's words
    assert "HTTP 500" in page.text
    assert "so the sync worker waits before it asks again" in page.text
    assert calls(sim, "retrieveBatch") == retrieved


def test_a_slow_simulator_never_slows_the_batch_page(sim, submitter_client):
    batch = cached_running_batch(sim)
    sim.set_faults({"latency": 2})
    url = reverse("batch-detail", args=["default", batch.openai_id])

    started = time.monotonic()
    page = submitter_client.get(url)

    assert page.status_code == 200
    assert time.monotonic() - started < 1.5
    assert batch.openai_id in page.text
