"""Nothing in the cache or the audit trail is deleted because upstream briefly did not list a
batch or answered 404 for it.

The sync code has three places where upstream can "lose" a batch: the list walk (incremental
or full) that does not show it, the worker's retrieve of a running batch (404), and the
retrieves of "Sync now" and of a batch's page. None of them deletes: a walk only inserts and
updates what it sees; a 404 stores the answer in `last_error` (shown on the batch's page) and
asks again after `SYNC_GONE_INTERVAL_SECONDS`; a later answer clears it. These tests watch every
SQL statement of those paths and find no DELETE of batches, their records or audit entries.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import (
    Batch,
    BatchTally,
    Event,
    ResultFile,
    ResultRow,
    Status,
    SyncState,
    Watch,
    default_connection,
)
from batches.services import batches as batch_services
from batches.services import connections as connection_services
from batches.services.sync import batch_refresh_scheduled, batches_sync, sync_pass
from tests.conftest import make_batch, make_list

API = settings.OPENAI_BASE_URL
LIST_URL = f"{API}/batches"
KEPT_TABLES = ("batch", "event", "resultrow", "resultfile", "watch", "submission")
DELETES = re.compile(
    r'DELETE\s+FROM\s+"?batches_(' + "|".join(KEPT_TABLES) + r')"?\b', re.IGNORECASE
)

pytestmark = pytest.mark.django_db


def not_found(upstream, batch_id: str) -> None:
    upstream.get(
        f"{API}/batches/{batch_id}",
        status=404,
        json={"error": {"message": "No such batch", "type": "invalid_request_error"}},
        headers={"x-request-id": "req_404"},
    )


@pytest.fixture
def now() -> dt.datetime:
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def cache(now, viewer) -> dict[str, Batch]:
    """A finished batch with its history (audit entries, result rows, a local copy, a watch),
    a running one that is due, and one more finished batch."""
    an_hour_ago = now - dt.timedelta(hours=1)
    done = batch_services.batch_upsert(
        payload=make_batch(id="batch_done", status="completed", output_file_id="file-out"),
        now=an_hour_ago,
    ).batch
    run = batch_services.batch_upsert(payload=make_batch(id="batch_run"), now=an_hour_ago).batch
    other = batch_services.batch_upsert(
        payload=make_batch(id="batch_other", status="completed"), now=an_hour_ago
    ).batch
    Event.record(Event.Action.CREATE, user=viewer, batch=done)
    Event.record(Event.Action.WATCH, user=viewer, batch=run)
    ResultRow.objects.create(batch=done, custom_id="req-1", ok=True, source="output")
    ResultFile.objects.create(batch=done, kind="output", file_id="file-out", path="/x")
    Watch.objects.create(user=viewer, batch=run)
    return {"done": done, "run": run, "other": other}


def assert_all_kept(cache: dict[str, Batch], events: int = 2) -> None:
    for batch in cache.values():
        assert Batch.objects.filter(pk=batch.pk, openai_id=batch.openai_id).exists()
    assert Batch.objects.count() == 3
    assert Event.objects.filter(batch__isnull=False).count() == events
    assert ResultRow.objects.filter(batch=cache["done"]).count() == 1
    assert ResultFile.objects.filter(batch=cache["done"]).count() == 1
    assert Watch.objects.filter(batch=cache["run"]).count() == 1
    assert Batch.objects.get(pk=cache["done"].pk).status == Status.COMPLETED


def test_a_full_walk_that_leaves_batches_out_and_a_404_delete_nothing(upstream, now, cache):
    upstream.get(LIST_URL, json=make_list([make_batch(id="batch_other", status="completed")]))
    not_found(upstream, "batch_run")

    with CaptureQueriesContext(connection) as queries:
        result = sync_pass(connection=default_connection(), now=now, full=True)

    assert result.full and result.gone == 1 and not result.failed
    assert not [q["sql"] for q in queries if DELETES.search(q["sql"])]
    assert_all_kept(cache)
    run = Batch.objects.get(pk=cache["run"].pk)
    assert run.running and run.status == Status.IN_PROGRESS  # not moved to an ending either
    assert "No such batch" in run.last_error and "req_404" in run.last_error
    assert run.next_refresh_at == now + dt.timedelta(seconds=settings.SYNC_GONE_INTERVAL_SECONDS)
    assert Batch.objects.get(pk=cache["done"].pk).last_error == ""  # not listed is no error
    # The full walk recounts the tallies from the cache: the batches left out still count.
    assert sum(BatchTally.objects.values_list("count", flat=True)) == 3


def test_an_incremental_walk_that_shows_an_empty_list_deletes_nothing(upstream, now, cache):
    SyncState.get(default_connection())
    SyncState.objects.update(last_full_sync_at=now)  # not due for a full walk
    Batch.objects.filter(pk=cache["run"].pk).update(next_refresh_at=now + dt.timedelta(hours=1))
    upstream.get(LIST_URL, json=make_list([]))

    with CaptureQueriesContext(connection) as queries:
        result = sync_pass(connection=default_connection(), now=now)

    assert result.listed_pages == 1 and not result.full
    assert not [q["sql"] for q in queries if DELETES.search(q["sql"])]
    assert_all_kept(cache)


def test_sync_now_and_a_batch_page_that_meet_a_404_delete_nothing(upstream, cache, viewer_client):
    upstream.get(LIST_URL, json=make_list([]))
    not_found(upstream, "batch_run")

    with CaptureQueriesContext(connection) as queries:
        batches_sync(connection=default_connection(), full=True)
        page = viewer_client.get(cache["run"].get_absolute_url())

    assert page.status_code == 200
    assert "No such batch" in page.content.decode()
    assert not [q["sql"] for q in queries if DELETES.search(q["sql"])]
    assert_all_kept(cache)


def test_a_batch_upstream_shows_again_is_the_same_row_with_its_history(upstream, now, cache):
    upstream.get(LIST_URL, json=make_list([]))
    not_found(upstream, "batch_run")
    sync_pass(connection=default_connection(), now=now, full=True)
    upstream.reset()
    later = now + dt.timedelta(seconds=settings.SYNC_GONE_INTERVAL_SECONDS)
    back = make_batch(id="batch_run", request_counts={"total": 100, "completed": 60, "failed": 0})
    upstream.get(
        LIST_URL,
        json=make_list([back, make_batch(id="batch_done", status="completed")]),
    )
    upstream.get(f"{API}/batches/batch_run", json=back)

    sync_pass(connection=default_connection(), now=later, full=True)

    assert_all_kept(cache)
    run = Batch.objects.get(openai_id="batch_run")
    assert run.pk == cache["run"].pk and run.last_error == ""
    assert run.request_completed == 60
    assert run.events.count() == 1 and run.watches.count() == 1


def test_a_batch_that_was_not_found_and_reappears_ended_loses_the_not_found(upstream, now, cache):
    not_found(upstream, "batch_run")
    batch_refresh_scheduled(batch=cache["run"], client=connection_services.get_client(), now=now)
    assert "No such batch" in Batch.objects.get(pk=cache["run"].pk).last_error
    upstream.reset()
    upstream.get(f"{API}/batches/batch_run", json=make_batch(id="batch_run", status="completed"))

    batch_refresh_scheduled(batch=cache["run"], client=connection_services.get_client(), now=now)

    run = Batch.objects.get(pk=cache["run"].pk)
    assert run.status == Status.COMPLETED and run.last_error == ""


def test_the_audit_trail_cannot_be_deleted_through_the_application(cache):
    with pytest.raises(Exception, match="cannot be deleted"):
        Event.objects.all().delete()
    with pytest.raises(Exception, match="cannot be deleted"):
        Event.objects.first().delete()
    assert Event.objects.count() == 2
