"""The activity log: who did what to which batch, filterable by person."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from batches.models import Batch, Event
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

API = settings.OPENAI_BASE_URL
ACTIVITY = reverse("activity")


def rows(response) -> list[str]:
    """Each table row's text without the "when" cell, squashed to single spaces."""
    body = response.content.decode().split("<tbody>", 1)[-1].split("</tbody>", 1)[0]
    found = re.findall(r"<tr>\s*<td[^>]*>.*?</td>(.*?)</tr>", body, flags=re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", row)).split()) for row in found]


@pytest.fixture
def batch(db) -> Batch:
    return batch_upsert(payload=make_batch(id="batch_act1")).batch


@pytest.fixture
def history(batch, submitter, admin_user) -> None:
    now = timezone.now()
    for minutes, action, user, target, detail in [
        (30, Event.Action.CREATE, submitter, batch, "/v1/chat/completions"),
        (20, Event.Action.CREATE_FAILED, submitter, None, "The OpenAI API rejected the request"),
        (10, Event.Action.CANCEL, admin_user, batch, ""),
        (5, Event.Action.SYNC, None, None, "3 new"),
    ]:
        event = Event.record(action, user=user, batch=target, detail=detail)
        # Back-dated for the test: the base manager, since the audit trail refuses updates.
        Event._base_manager.filter(pk=event.pk).update(at=now - dt.timedelta(minutes=minutes))


def test_the_activity_lists_who_did_what_newest_first(viewer_client, upstream, history):
    response = viewer_client.get(ACTIVITY)

    assert response.status_code == 200
    assert rows(response) == [
        "batchweb synced ok — 3 new",
        "alice cancelled ok batch_act1",
        "sam failed to create failed — The OpenAI API rejected the request",
        "sam created ok batch_act1 /v1/chat/completions",
    ]
    content = response.content.decode()
    assert f'href="{reverse("batch-detail", args=["default", "batch_act1"])}"' in content
    assert 'href="?user=sam"' in content
    assert len(upstream.calls) == 0


def test_the_activity_can_be_filtered_by_person(viewer_client, history):
    response = viewer_client.get(ACTIVITY, {"user": "sam"})

    assert rows(response) == [
        "sam failed to create failed — The OpenAI API rejected the request",
        "sam created ok batch_act1 /v1/chat/completions",
    ]
    content = html.unescape(response.content.decode())
    assert "Showing what <strong>sam</strong> did." in content
    assert f'href="{ACTIVITY}">Show everyone' in content


def test_filtering_by_an_unknown_person_shows_nothing_and_does_not_crash(viewer_client, history):
    response = viewer_client.get(ACTIVITY, {"user": "nobody<b>"})

    assert response.status_code == 200
    assert rows(response) == []
    content = response.content.decode()
    assert "nobody&lt;b&gt;" in content
    assert "nobody<b>" not in content


def test_an_empty_activity_log_says_what_will_appear(viewer_client, db):
    response = viewer_client.get(ACTIVITY)

    assert response.status_code == 200
    assert "Nothing yet." in response.content.decode()


def test_a_cancel_made_on_the_site_appears_in_the_activity(
    submitter_client, upstream, batch, submitter
):
    upstream.post(
        f"{API}/batches/batch_act1/cancel",
        json=make_batch(id="batch_act1", status="cancelling", cancelling_at=1764000500),
    )
    Batch.objects.filter(pk=batch.pk).update(created_by=submitter)  # submitters cancel their own
    submitter_client.post(reverse("batch-cancel", args=["default", "batch_act1"]))

    response = submitter_client.get(ACTIVITY, {"user": "sam"})

    (row,) = rows(response)
    assert "sam cancelled ok batch_act1" in row


def test_the_number_of_queries_does_not_grow_with_the_number_of_events(
    viewer_client, batch, submitter, admin_user, django_assert_num_queries
):
    def record(n: int) -> None:
        for i in range(n):
            Event.record(Event.Action.CREATE, user=[submitter, admin_user][i % 2], batch=batch)

    record(3)
    viewer_client.get(ACTIVITY)
    caches["people"].clear()  # a person's access and permissions, kept per cache generation
    with CaptureQueriesContext(connection) as few:
        viewer_client.get(ACTIVITY)

    record(40)
    caches["people"].clear()  # the same lookups again
    with django_assert_num_queries(len(few.captured_queries)):
        response = viewer_client.get(ACTIVITY)
    assert len(rows(response)) == 43


def test_the_activity_log_pages_with_a_cursor_newest_first(viewer_client, submitter):
    from batches.views.activity import PAGE_SIZE

    for i in range(PAGE_SIZE + 5):
        Event.record(Event.Action.CREATE, user=submitter, detail=f"event {i}")

    first = viewer_client.get(reverse("activity"))
    older = first.context["older_url"]
    second = viewer_client.get(reverse("activity") + older).content.decode()

    assert f"event {PAGE_SIZE + 4}<" in first.content.decode()
    assert "event 0<" not in first.content.decode()
    assert "event 0<" in second and f"event {PAGE_SIZE + 4}<" not in second
    assert "Older" in second and "← Newest" in second
