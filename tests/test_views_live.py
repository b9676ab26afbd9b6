"""The live fragments: running rows and a running batch's progress, from the cache."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from batches.models import Batch
from batches.services import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db


def add(openai_id: str, status: str, **fields) -> Batch:
    return batch_upsert(payload=make_batch(id=openai_id, status=status, **fields)).batch


def test_the_list_polls_only_while_it_shows_running_batches(viewer_client):
    running = add("batch_run", "in_progress")
    add("batch_done", "completed", created_at=1763000000)

    content = viewer_client.get(reverse("batch-list")).content.decode()

    assert f'ids={running.pk}:in_progress"' in content
    assert "hx-trigger=\"every 5s [document.visibilityState === 'visible']\"" in content
    assert "htmx" in content  # the script django-htmx ships


def test_a_list_of_finished_batches_does_not_poll(viewer_client):
    add("batch_done", "completed")

    content = viewer_client.get(reverse("batch-list")).content.decode()

    assert "hx-get" not in content


def test_the_rows_fragment_sends_fresh_rows_and_announces_changes(viewer_client, upstream):
    batch = add("batch_run", "in_progress")
    add("batch_run", "completed")  # the worker saw it finish

    response = viewer_client.get(reverse("batch-rows-live"), {"ids": f"{batch.pk}:in_progress"})

    content = response.content.decode()
    assert response.status_code == 200
    assert f'<tr id="row-{batch.pk}" data-batch-id="batch_run" hx-swap-oob="true">' in content
    assert "completed" in content
    assert "batch_run is now completed" in content
    # Finished: the poller comes back without a trigger, so polling stops.
    poller = re.search(r'<div id="list-poller"[^>]*>', content).group(0)
    assert "hx-get" not in poller
    assert not upstream.calls  # from the cache only


def test_the_rows_fragment_ignores_junk_ids(viewer_client):
    response = viewer_client.get(reverse("batch-rows-live"), {"ids": "x,1:,:,../"})

    assert response.status_code == 200


def test_the_detail_fragment_updates_progress_without_calling_upstream(viewer_client, upstream):
    add("batch_run", "in_progress", request_counts={"total": 10, "completed": 7, "failed": 0})

    response = viewer_client.get(
        reverse("batch-live", args=["default", "batch_run"]), {"seen": "in_progress"}
    )

    content = response.content.decode()
    assert "7 / 10" in content
    assert "hx-trigger" in content
    assert "HX-Refresh" not in response.headers
    assert not upstream.calls


def test_the_detail_fragment_reloads_the_page_once_the_batch_finishes(viewer_client):
    add("batch_run", "completed")

    response = viewer_client.get(
        reverse("batch-live", args=["default", "batch_run"]), {"seen": "finalizing"}
    )

    assert response.headers["HX-Refresh"] == "true"
    assert "Status: completed" in response.content.decode()


def test_pages_offer_a_refresh_link_for_people_without_javascript(viewer_client):
    add("batch_run", "completed")

    content = viewer_client.get(
        reverse("batch-detail", args=["default", "batch_run"])
    ).content.decode()

    assert 'class="refresh-link">Refresh</a>' in content


def test_live_fragments_need_a_signed_in_person(client):
    response = client.get(reverse("batch-rows-live"))

    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
