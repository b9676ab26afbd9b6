"""Quirks of OpenAI-compatible servers (batch-api.md, "Compatible servers"): with them on, the
sync worker still caches every batch and the pages still render."""

from __future__ import annotations

import html
import io

import pytest
from django.urls import reverse

from batches.models import Batch, Status, default_connection
from batches.openai_client import InvalidRequest, NotFound
from batches.results import summarize
from batches.services import batches as batch_services
from batches.services import sync as sync_services
from tests.integration.conftest import write_jsonl

pytestmark = pytest.mark.django_db

ENDPOINT = "/v1/chat/completions"
ALL_QUIRKS = {
    "id_prefix": "batch-",
    "omit_nulls": True,
    "skip_finalizing": True,
    "body_as_string": True,
    "errors_message_only": True,
}


@pytest.fixture
def quirky(sim):
    sim.set_faults({"quirks": ALL_QUIRKS})
    return sim


def test_batches_with_dashed_ids_and_omitted_nulls_are_cached_and_their_pages_render(
    quirky, submitter, submitter_client, uploaded_file_id
):
    mine = batch_services.batch_create(
        user=submitter, input_file_id=uploaded_file_id, endpoint=ENDPOINT, metadata={"job": "q"}
    )
    quirky.seed_batches(count=2, status="failed")
    quirky.seed_batches(count=2, status="completed")

    result = sync_services.batches_sync(connection=default_connection())

    assert result.created == 4  # the one created through batchweb was cached already
    batches = list(Batch.objects.all())
    assert len(batches) == 5
    assert all(b.openai_id.startswith("batch-") for b in batches)
    assert mine.openai_id.startswith("batch-") and mine.label == "q"
    fresh = Batch.objects.get(pk=mine.pk)
    assert "output_file_id" not in fresh.raw and fresh.output_file_id == ""  # omitted, not null
    failed = Batch.objects.filter(status=Status.FAILED).first()
    assert failed.error_list()[0]["code"] == "token_limit_exceeded"
    assert "line" not in failed.error_list()[0]

    listing = submitter_client.get(reverse("batch-list"))
    assert listing.status_code == 200
    for batch in batches:
        assert batch.openai_id in listing.content.decode()
        page = submitter_client.get(reverse("batch-detail", args=["default", batch.openai_id]))
        assert page.status_code == 200
    failed_page = submitter_client.get(reverse("batch-detail", args=["default", failed.openai_id]))
    assert "Enqueued token limit reached" in failed_page.content.decode()


def test_a_batch_that_skips_finalizing_goes_from_in_progress_to_completed_on_its_page(
    quirky, submitter, submitter_client, uploaded_file_id
):
    batch = batch_services.batch_create(
        user=submitter, input_file_id=uploaded_file_id, endpoint=ENDPOINT
    )
    url = reverse("batch-detail", args=["default", batch.openai_id])

    quirky.advance(3.5)  # validating (2 s), then half-way through three 1-second requests
    sync_services.refresh_running_batches(connection=default_connection())  # what Sync now does
    running = submitter_client.get(url).context["batch"]
    assert running.status == Status.IN_PROGRESS
    assert 0 < running.requests_done < 3

    quirky.advance(2)  # on OpenAI this moment would be `finalizing`
    sync_services.refresh_running_batches(connection=default_connection())
    done = submitter_client.get(url).context["batch"]
    assert done.status == Status.COMPLETED
    assert done.finalizing_at is None
    assert "finalizing" not in [name for name, _, _ in done.timeline()]
    assert done.request_completed == 3


def test_output_lines_with_the_body_sent_as_a_string_are_summarised_like_objects(
    quirky, tmp_path, make_client
):
    client = make_client()
    path = write_jsonl(tmp_path / "input.jsonl", count=4)
    with path.open("rb") as handle:
        file_id = client.upload_file(fileobj=handle, filename="input.jsonl")["id"]
    created = client.create_batch(input_file_id=file_id, endpoint=ENDPOINT)
    quirky.advance(2 + 4 + 1)
    done = client.retrieve_batch(created["id"])
    assert done["status"] == "completed"

    output = b"".join(client.iter_file_content(done["output_file_id"]))
    assert b'"body": "{' in output  # the quirk really is on the wire
    summary = summarize([io.BytesIO(output)], total_requests=4)

    assert (summary.succeeded, summary.failed, summary.never_ran) == (4, 0, 0)
    assert summary.input_tokens > 0 and summary.output_tokens > 0


def test_errors_with_only_a_message_still_name_their_class_and_reach_the_page(
    quirky, make_client, submitter_client
):
    seeded = quirky.seed_batches(count=1, status="completed")
    client = make_client()
    with pytest.raises(InvalidRequest) as conflict:
        client.cancel_batch(seeded["first_id"].replace("batch_", "batch-"))
    assert conflict.value.status == 409
    assert conflict.value.code is None
    assert "Cannot cancel a batch with status 'completed'" in str(conflict.value)

    quirky.seed_batches(count=1, status="in_progress")
    sync_services.batches_sync(connection=default_connection())
    running = Batch.objects.get(status=Status.IN_PROGRESS)
    quirky.reset()  # upstream forgets the batch...
    quirky.set_faults({"quirks": ALL_QUIRKS})  # ...and still answers like a compatible server
    with pytest.raises(NotFound):
        client.retrieve_batch(running.openai_id)

    sync_services.refresh_running_batches(connection=default_connection())  # the worker's look
    page = submitter_client.get(reverse("batch-detail", args=["default", running.openai_id]))

    assert page.status_code == 200
    assert "Last problem seen by the sync worker" in html.unescape(page.content.decode())
    assert f"No batch found with id '{running.openai_id}'" in html.unescape(page.content.decode())
