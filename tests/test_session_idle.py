"""Sessions end after BATCHWEB_SESSION_IDLE_MINUTES without a person's request: a page pushes
the expiry forward (at most one session write a minute), a live update never does and never
writes."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from batches.services.batches import batch_upsert
from tests.conftest import make_batch

LIVE = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def clock(monkeypatch):
    """The middleware's clock, moved by hand."""
    now = [1_800_000_000.0]
    monkeypatch.setattr("batches.middleware.time.time", lambda: now[0])
    return now


@pytest.fixture
def running(db):
    return batch_upsert(payload=make_batch(id="batch_idle1", status="in_progress")).batch


def expiry(client) -> dt.datetime:
    return Session.objects.get(session_key=client.session.session_key).expire_date


def session_writes(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if "django_session" in q["sql"] and not q["sql"].lstrip().upper().startswith("SELECT")
    ]


def test_the_session_lasts_the_idle_time():
    assert settings.SESSION_COOKIE_AGE == settings.SESSION_IDLE_MINUTES * 60
    assert not settings.SESSION_SAVE_EVERY_REQUEST


def test_a_page_pushes_the_expiry_forward_at_most_once_a_minute(clock, viewer_client, running):
    with CaptureQueriesContext(connection) as first:
        viewer_client.get(reverse("batch-list"))  # just signed in: nothing to write
    clock[0] += 30
    with CaptureQueriesContext(connection) as soon:
        viewer_client.get(reverse("batch-list"))
    before = expiry(viewer_client)
    clock[0] += 31
    with CaptureQueriesContext(connection) as later:
        response = viewer_client.get(reverse("batch-list"))

    assert session_writes(first) == [] and session_writes(soon) == []
    assert len(session_writes(later)) == 1
    assert expiry(viewer_client) > before
    assert response.cookies[settings.SESSION_COOKIE_NAME]["max-age"] == settings.SESSION_COOKIE_AGE


def test_live_updates_neither_write_nor_keep_the_session_alive(clock, viewer_client, running):
    viewer_client.get(reverse("batch-list"))
    before = expiry(viewer_client)
    live = reverse("batch-live", args=["default", "batch_idle1"])
    writes = []
    for _ in range(5):
        clock[0] += 120
        with CaptureQueriesContext(connection) as poll:
            assert viewer_client.get(live, **LIVE).status_code == 200
            assert viewer_client.get(reverse("batch-rows-live"), **LIVE).status_code == 200
        writes += session_writes(poll)

    assert writes == []
    assert expiry(viewer_client) == before


def test_after_the_idle_time_pages_ask_to_sign_in_and_live_updates_reload_the_page(
    viewer_client, running
):
    Session.objects.update(expire_date=timezone.now() - dt.timedelta(seconds=1))
    live = reverse("batch-live", args=["default", "batch_idle1"])

    poll = viewer_client.get(live, **LIVE)
    page = viewer_client.get(reverse("batch-list"))

    assert poll.status_code == 204 and poll["HX-Refresh"] == "true"  # not the form in a fragment
    assert page.status_code == 302 and page["Location"].startswith(reverse("login"))
