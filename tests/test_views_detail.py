"""The batch detail page: every field, and a running batch's page drawn from the cache: it
asks the sync worker for a refresh (at most once per DETAIL_REFRESH_SECONDS, however many
look), says how fresh it is and what the worker is doing, and never calls upstream itself."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from batches.models import Batch, Connection, Event, SyncState, default_connection
from batches.services.batches import batch_upsert
from batches.services.connections import get_client
from batches.services.sync import refresh_due_batches
from tests.conftest import load_payload, make_batch, make_list

API = settings.OPENAI_BASE_URL
KEY = settings.OPENAI_API_KEY


def detail(openai_id: str) -> str:
    return reverse("batch-detail", args=["default", openai_id])


def utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def text(response) -> str:
    return html.unescape(response.content.decode())


def words(response) -> str:
    """The page's text without its tags: "Cached <time …>10 min ago</time>." reads as said."""
    return re.sub(r"<[^>]+>", "", text(response))


def note(response) -> str:
    """The running batch's freshness note, as words."""
    part = text(response).split('id="detail-freshness"', 1)[1].split(">", 1)[1]
    part = part.split("</div>", 1)[0]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", part))


@pytest.fixture
def running(db) -> Batch:
    """A running batch last read from upstream ten minutes ago, next due in a few minutes."""
    batch = batch_upsert(payload=make_batch(id="batch_run1"), now=ago(600)).batch
    Batch.objects.filter(pk=batch.pk).update(next_refresh_at=ago(-240))
    return Batch.objects.get(pk=batch.pk)


def ago(seconds: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=seconds)


def due_at(openai_id: str) -> dt.datetime | None:
    return Batch.objects.get(openai_id=openai_id).next_refresh_at


@pytest.fixture
def worker_ok(db) -> SyncState:
    """The sync worker made a pass over the default connection a moment ago."""
    state = SyncState.get(default_connection())
    state.record_success()
    return state


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


# --- A running batch: from the cache, asking the worker ------------------------------------------


def test_a_running_batch_page_is_drawn_from_the_cache_without_calling_upstream(
    viewer_client, upstream, running, worker_ok
):
    response = viewer_client.get(detail("batch_run1"))

    assert response.status_code == 200
    assert '<span class="badge s-in_progress">in progress</span>' in text(response)
    assert "42 / 100" in text(response)  # the cached counts
    assert note(response).strip() == (
        "Cached 10 min ago. While this page is open, the sync worker fetches the batch from "
        "upstream again every few seconds."
    )
    assert len(upstream.calls) == 0  # an unregistered call would fail loudly, too


def test_opening_a_running_batch_makes_it_due_for_the_worker_now(viewer_client, running):
    assert due_at("batch_run1") > timezone.now()  # on its schedule, a few minutes ahead

    before = timezone.now()
    viewer_client.get(detail("batch_run1"))

    assert before <= due_at("batch_run1") <= timezone.now()


def test_a_second_opening_within_the_bound_does_not_move_it_again(viewer_client, running, settings):
    settings.DETAIL_REFRESH_SECONDS = 5
    viewer_client.get(detail("batch_run1"))
    asked = due_at("batch_run1")

    for _ in range(3):
        viewer_client.get(detail("batch_run1"))

    assert due_at("batch_run1") == asked


def test_many_people_looking_at_once_ask_once(running, viewer, submitter, operator):
    asked = []
    for person in (viewer, submitter, operator):
        client = Client()
        client.force_login(person)
        client.get(detail("batch_run1"))
        asked.append(due_at("batch_run1"))

    assert len(set(asked)) == 1


def test_a_batch_read_from_upstream_moments_ago_is_not_asked_for_again(viewer_client, db):
    batch_upsert(payload=make_batch(id="batch_fresh"), now=ago(2))
    Batch.objects.filter(openai_id="batch_fresh").update(next_refresh_at=ago(-300))

    viewer_client.get(detail("batch_fresh"))

    assert due_at("batch_fresh") > timezone.now() + dt.timedelta(seconds=200)


def test_a_batch_its_schedule_makes_due_within_the_bound_is_left_alone(
    viewer_client, running, settings
):
    settings.DETAIL_REFRESH_SECONDS = 5
    soon = ago(-3)
    Batch.objects.filter(pk=running.pk).update(next_refresh_at=soon)

    viewer_client.get(detail("batch_run1"))

    assert due_at("batch_run1") == soon


def test_the_worker_then_refreshes_it_once_however_many_looked(running, viewer, operator, upstream):
    for person in (viewer, operator, viewer):
        client = Client()
        client.force_login(person)
        client.get(detail("batch_run1"))
    upstream.get(
        f"{API}/batches/batch_run1",
        json=make_batch(
            id="batch_run1",
            status="finalizing",
            finalizing_at=1764003000,
            request_counts={"total": 100, "completed": 97, "failed": 3},
        ),
    )

    first = refresh_due_batches(
        connection=default_connection(), client=get_client(), due_at=timezone.now()
    )
    client.get(detail("batch_run1"))  # read a moment ago: not asked again
    second = refresh_due_batches(
        connection=default_connection(), client=get_client(), due_at=timezone.now()
    )

    assert (first.refreshed, second.refreshed) == (1, 0)
    assert len(upstream.calls) == 1
    page = client.get(detail("batch_run1"))
    assert '<span class="badge s-finalizing">finalizing</span>' in text(page)
    assert "100 / 100" in text(page)
    assert note(page).strip().startswith("Cached just now.")


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
def test_a_finished_batch_is_not_asked_for_and_its_page_does_not_poll(
    viewer_client, upstream, status
):
    batch_upsert(payload=make_batch(id="batch_end", status=status), now=ago(600))

    response = viewer_client.get(detail("batch_end"))

    assert response.status_code == 200
    content = text(response)
    assert 'id="live-detail"' in content
    assert "hx-get" not in content.split('id="live-detail"', 1)[1].split(">", 1)[0]
    assert "hx-trigger" not in content
    assert 'id="detail-freshness"' not in content
    assert due_at("batch_end") is None
    assert len(upstream.calls) == 0


def test_a_running_batch_page_polls_its_live_update(viewer_client, running, worker_ok):
    content = text(viewer_client.get(detail("batch_run1")))

    poller = content.split('id="live-detail"', 1)[1].split(">", 1)[0]
    live = reverse("batch-live", args=["default", "batch_run1"])
    assert f'hx-get="{live}?seen=in_progress"' in poller
    assert "every 5s" in poller


def test_a_person_who_may_not_see_the_connection_can_not_ask_for_its_batches(
    viewer_client, research
):
    stored = batch_upsert(payload=make_batch(id="batch_secret"), connection=research, now=ago(600))
    Batch.objects.filter(pk=stored.batch.pk).update(next_refresh_at=ago(-240))
    scheduled = due_at("batch_secret")

    page = viewer_client.get(reverse("batch-detail", args=["research", "batch_secret"]))
    live = viewer_client.get(reverse("batch-live", args=["research", "batch_secret"]))

    assert (page.status_code, live.status_code) == (404, 404)
    assert due_at("batch_secret") == scheduled


# --- What the page says about the worker ------------------------------------------------------


def test_a_failing_upstream_is_explained_beside_the_cached_copy(viewer_client, upstream, running):
    SyncState.get(default_connection()).record_failure(
        RuntimeError("Upstream answered with an error (HTTP 500): The server had an error"),
        now=ago(120),
    )

    page = viewer_client.get(detail("batch_run1"))

    assert "Upstream is failing" in words(page)  # the frame's banner, with the error
    assert "(HTTP 500): The server had an error" in words(page)
    assert note(page).strip() == (
        "Cached 10 min ago. Upstream has been failing for OpenAI since 2 min ago, so the sync "
        "worker waits before it asks again: this page shows the cached copy until upstream "
        "answers."
    )
    assert "in progress" in words(page) and "42 / 100" in words(page)
    assert len(upstream.calls) == 0


def test_upstream_error_text_is_escaped_on_the_page(viewer_client, running):
    SyncState.get(default_connection()).record_failure(RuntimeError("<script>alert(1)</script>"))

    content = viewer_client.get(detail("batch_run1")).content.decode()

    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_a_worker_that_stopped_is_named_with_a_hint(viewer_client, running):
    SyncState.get(default_connection()).record_success(now=ago(3600))

    said = note(viewer_client.get(detail("batch_run1")))

    assert "Cached 10 min ago. The sync worker has not synced OpenAI since 1 h ago" in said
    assert "is manage.py sync_batches --loop running?" in said
    assert "Sync now" not in said  # a Viewer may not sync


def test_a_worker_that_never_ran_is_named_and_an_operator_may_sync_now(operator_client, running):
    page = operator_client.get(detail("batch_run1"))

    assert "The sync worker has not synced OpenAI yet" in note(page)
    form = text(page).split('id="detail-freshness"', 1)[1].split("</div>", 1)[0]
    assert f'action="{reverse("batch-sync")}"' in form
    assert 'name="connection" value="default"' in form
    assert f'name="next" value="{detail("batch_run1")}"' in form
    assert "Sync now</button>" in form


def test_sync_now_from_the_batch_page_asks_upstream_at_once_and_comes_back(
    operator_client, upstream, running
):
    upstream.get(f"{API}/batches", json=make_list([]))
    upstream.get(
        f"{API}/batches/batch_run1",
        json=make_batch(
            id="batch_run1", request_counts={"total": 100, "completed": 60, "failed": 0}
        ),
    )

    response = operator_client.post(
        reverse("batch-sync"), {"connection": "default", "next": detail("batch_run1")}
    )

    assert response.status_code == 302 and response.url == detail("batch_run1")
    assert [c.request.url for c in upstream.calls] == [
        f"{API}/batches?limit=100",
        f"{API}/batches/batch_run1",
    ]
    assert Event.objects.filter(action=Event.Action.SYNC).count() == 1  # audited as before
    assert "60 / 100" in text(operator_client.get(detail("batch_run1")))


def test_a_disabled_connection_says_its_batches_are_not_refreshed(viewer_client, running):
    Connection.objects.filter(slug="default").update(enabled=False)
    scheduled = due_at("batch_run1")

    said = note(viewer_client.get(detail("batch_run1")))

    assert "The sync worker does not sync OpenAI (it is disabled or has no API key)" in said
    assert due_at("batch_run1") == scheduled  # nobody would fetch it: not asked


def test_a_batch_upstream_no_longer_knows_shows_the_workers_note(viewer_client, running):
    Batch.objects.filter(pk=running.pk).update(
        last_error="Upstream does not know this object (HTTP 404): No batch found."
    )

    page = viewer_client.get(detail("batch_run1"))

    assert "Last problem seen by the sync worker: Upstream does not know" in words(page)
    assert "in progress" in words(page)
