"""The live fragments: running rows and a running batch's progress, from the cache."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from batches.models import Batch
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)


def add(openai_id: str, status: str, **fields) -> Batch:
    return batch_upsert(payload=make_batch(id=openai_id, status=status, **fields)).batch


def test_the_list_polls_only_while_it_shows_running_batches(viewer_client):
    running = add("batch_run", "in_progress")
    add("batch_done", "completed", created_at=1763000000)

    content = viewer_client.get(reverse("batch-list")).content.decode()

    assert f'ids={running.pk}:in_progress&amp;back=/"' in content
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
    assert '<span id="detail-status" hx-swap-oob="true">' in content
    assert 'id="detail-freshness"' in content
    assert re.search(r"Cached <time [^>]+>just now</time>\.", content)
    assert 'id="freshness"' in content  # the site's freshness line, drawn each time
    page = reverse("batch-detail", args=["default", "batch_run"])
    assert f'<a href="{page}" class="refresh-link">Refresh</a>' in content  # not the fragment
    assert "HX-Refresh" not in response.headers
    assert not upstream.calls


def test_each_poll_asks_the_worker_as_opening_the_page_does(viewer_client, settings):
    settings.DETAIL_REFRESH_SECONDS = 5
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    batch_upsert(payload=make_batch(id="batch_run", status="in_progress"), now=long_ago)
    Batch.objects.filter(openai_id="batch_run").update(next_refresh_at=timezone.now() + HOUR)
    live = reverse("batch-live", args=["default", "batch_run"])

    before = timezone.now()
    viewer_client.get(live, {"seen": "in_progress"})
    asked = Batch.objects.get(openai_id="batch_run").next_refresh_at
    viewer_client.get(live, {"seen": "in_progress"})

    assert before <= asked <= timezone.now()
    assert Batch.objects.get(openai_id="batch_run").next_refresh_at == asked  # once per bound


def test_the_detail_fragment_answers_304_until_the_batch_changes(viewer_client):
    add("batch_run", "in_progress", request_counts={"total": 10, "completed": 7, "failed": 0})
    live = reverse("batch-live", args=["default", "batch_run"])

    first = viewer_client.get(live, {"seen": "in_progress"})
    again = viewer_client.get(live, {"seen": "in_progress"}, HTTP_IF_NONE_MATCH=first["ETag"])
    add("batch_run", "in_progress", request_counts={"total": 10, "completed": 9, "failed": 0})
    changed = viewer_client.get(live, {"seen": "in_progress"}, HTTP_IF_NONE_MATCH=first["ETag"])

    assert first.status_code == 200 and first["ETag"]
    assert "no-cache" in first["Cache-Control"] and "private" in first["Cache-Control"]
    assert again.status_code == 304 and not again.content
    assert changed.status_code == 200
    assert "9 / 10" in changed.content.decode()
    assert changed["ETag"] != first["ETag"]


def test_the_detail_fragment_is_kept_by_the_page_cache(viewer_client):
    add("batch_run", "in_progress")
    live = reverse("batch-live", args=["default", "batch_run"])
    viewer_client.get(live, {"seen": "in_progress"})  # drawn, and kept

    with CaptureQueriesContext(connection) as drawn_again:
        viewer_client.get(live, {"seen": "validating"})  # another URL: drawn
    with CaptureQueriesContext(connection) as kept:
        viewer_client.get(live, {"seen": "in_progress"})

    assert len(kept) < len(drawn_again)


def test_the_detail_fragment_reloads_the_page_once_the_batch_finishes(viewer_client):
    add("batch_run", "completed")

    response = viewer_client.get(
        reverse("batch-live", args=["default", "batch_run"]), {"seen": "finalizing"}
    )

    content = response.content.decode()
    assert response.headers["HX-Refresh"] == "true"
    assert "Status: completed" in content
    assert "hx-trigger" not in content  # and polls no more


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


@pytest.mark.parametrize(
    ("back", "refresh"),
    [
        ("/?status=running&q=eval", "/?status=running&amp;q=eval"),
        ("https://elsewhere.example/", "/"),
        ("/activity/", "/"),
        ("//elsewhere.example/?x=1", "/"),
        ("", "/"),
    ],
)
def test_the_live_rows_refresh_link_reloads_the_list_as_filtered_and_nothing_else(
    viewer_client, back, refresh
):
    """The live rows replace the freshness line; its Refresh link must reload the list the
    person is on (`back`, which the list's poller carries), never the fragment or another
    site."""
    running = add("batch_run", "in_progress")

    response = viewer_client.get(
        reverse("batch-rows-live"), {"ids": f"{running.pk}:in_progress", "back": back}
    )

    link = re.search(r'<a href="([^"]*)" class="refresh-link">', response.content.decode())
    assert link is not None and link.group(1) == refresh
    poller = re.search(r'<div id="list-poller"[^>]*>', response.content.decode()).group(0)
    assert "back=" in poller and "elsewhere" not in poller


def test_the_live_rows_frame_is_kept_per_refresh_link(viewer_client):
    """The freshness line around the live rows is kept like a page's frame: asked for other
    rows, only the rows are drawn; asked from another list, its own Refresh link."""
    running = add("batch_run", "in_progress")
    other = add("batch_run2", "in_progress")
    url = reverse("batch-rows-live")

    def frames(response) -> int:
        return sum(t.name.endswith("rows_live_framed.html") for t in response.templates)

    first = viewer_client.get(url, {"ids": f"{running.pk}:in_progress", "back": "/?q=a"})
    second = viewer_client.get(url, {"ids": f"{other.pk}:in_progress", "back": "/?q=a"})
    third = viewer_client.get(url, {"ids": f"{other.pk}:in_progress", "back": "/?q=b"})

    assert (frames(first), frames(second), frames(third)) == (1, 0, 1)
    assert 'href="/?q=a" class="refresh-link"' in second.content.decode()
    assert 'href="/?q=b" class="refresh-link"' in third.content.decode()
