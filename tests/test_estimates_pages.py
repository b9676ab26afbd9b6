"""Finish-time estimates on the batch's page and the list, at a flat number of queries."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from batches.models import Batch
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db
API = settings.OPENAI_BASE_URL
LIST = reverse("batch-list")


def text(response) -> str:
    return html.unescape(response.content.decode())


def progressing(
    openai_id: str, *, per_minute: int = 10, deadline_in: dt.timedelta | None = None
) -> Batch:
    """A batch seen every 2 minutes for the last 20, `per_minute` requests done a minute."""
    now = timezone.now()
    deadline = now + (deadline_in or dt.timedelta(hours=20))
    payload = {}
    for m in range(20, -1, -2):
        payload = make_batch(
            id=openai_id,
            created_at=int((now - dt.timedelta(hours=1)).timestamp()),
            expires_at=int(deadline.timestamp()),
            request_counts={"total": 1000, "completed": (20 - m) * per_minute, "failed": 0},
        )
        batch = batch_upsert(payload=payload, now=now - dt.timedelta(minutes=m)).batch
    batch.payload = payload
    return batch


def test_the_batch_page_says_when_it_is_expected_to_finish(viewer_client, upstream):
    batch = progressing("batch_eta1")
    upstream.get(f"{API}/batches/batch_eta1", json=batch.payload)

    content = text(viewer_client.get(reverse("batch-detail", args=["default", "batch_eta1"])))

    assert "Expected to finish in about 1 h 20 min (between" in content
    assert "well before the deadline" in content


def test_the_batch_page_flags_a_batch_at_risk_in_words(viewer_client, upstream):
    batch = progressing("batch_eta2", deadline_in=dt.timedelta(minutes=40))
    upstream.get(f"{API}/batches/batch_eta2", json=batch.payload)

    content = text(viewer_client.get(reverse("batch-detail", args=["default", "batch_eta2"])))

    assert "At risk: may not finish before the deadline in 40 min" in content


def test_the_live_fragment_carries_the_estimate(viewer_client):
    progressing("batch_eta3")

    response = viewer_client.get(
        reverse("batch-live", args=["default", "batch_eta3"]), {"seen": "in_progress"}
    )

    assert "Expected to finish in about 1 h 20 min" in text(response)


def test_a_batch_just_started_is_too_early_to_say(viewer_client, upstream):
    now = int(timezone.now().timestamp())
    payload = make_batch(
        id="batch_new", created_at=now - 60, in_progress_at=now - 30, expires_at=now + 86000
    )
    batch_upsert(payload=payload)
    upstream.get(f"{API}/batches/batch_new", json=payload)

    content = text(viewer_client.get(reverse("batch-detail", args=["default", "batch_new"])))

    assert "Too early to say when it will finish" in content


def test_the_list_shows_a_short_estimate_and_at_risk_in_words(viewer_client):
    progressing("batch_safe")
    progressing("batch_late", deadline_in=dt.timedelta(minutes=40))
    batch_upsert(payload=make_batch(id="batch_done", status="completed"))

    content = text(viewer_client.get(LIST))

    assert "≈ 1 h 20 min left" in content
    assert '<span class="badge s-warning">at risk</span>' in content


def test_the_live_rows_show_the_estimate_too(viewer_client):
    batch = progressing("batch_safe")

    response = viewer_client.get(reverse("batch-rows-live"), {"ids": f"{batch.pk}:in_progress"})

    assert "≈ 1 h 20 min left" in text(response)


def _queries(client, url: str, params: dict[str, str] | None = None) -> int:
    client.get(url, params)  # warm the session and permission caches
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_estimates_on_the_list_cost_one_query_whatever_the_number_of_running_rows(viewer_client):
    for i in range(3):
        progressing(f"batch_few{i}")
    few = _queries(viewer_client, LIST)
    ids = ",".join(f"{b.pk}:in_progress" for b in Batch.objects.all())
    few_live = _queries(viewer_client, reverse("batch-rows-live"), {"ids": ids})

    for i in range(30):
        progressing(f"batch_many{i}")
    many = _queries(viewer_client, LIST)
    ids = ",".join(f"{b.pk}:in_progress" for b in Batch.objects.all())
    many_live = _queries(viewer_client, reverse("batch-rows-live"), {"ids": ids})

    assert text(viewer_client.get(LIST)).count("left</span>") == 33
    assert (many, many_live) == (few, few_live)


def test_a_batch_whose_last_change_is_older_than_the_loaded_history_shows_stalled(viewer_client):
    now = timezone.now()
    base = {
        "id": "batch_stuck",
        "created_at": int((now - dt.timedelta(hours=3)).timestamp()),
        "expires_at": int((now + dt.timedelta(hours=20)).timestamp()),
    }
    for m, done in [(180, 0), (170, 100), (150, 300)]:
        payload = make_batch(**base, request_counts={"total": 1000, "completed": done, "failed": 0})
        batch_upsert(payload=payload, now=now - dt.timedelta(minutes=m))

    content = text(viewer_client.get(LIST))

    assert '<span class="badge s-warning">stalled</span>' in content
    assert "Stalled for 2 h 30 min: no request done since." in content
