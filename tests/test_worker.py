"""The sync worker's steps (`sync_services.sync_pass` and its parts) and its loop.

Upstream is faked with `responses`; the clock is pinned by passing `now`, so schedules are exact.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import signal
import threading
import time
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import OperationalError, connection, connections
from django.utils import timezone

from batches.cache import generations as generation
from batches.management.commands import sync_batches as command_module
from batches.models import Batch, BatchTally, Status, SyncState, default_connection
from batches.services import batches as batch_services
from batches.services import connections as connection_services
from batches.services import sync
from batches.services import sync as sync_services
from batches.services.sync import (
    PassResult,
    backoff_remaining,
    batch_refresh_scheduled,
    batch_refresh_soon,
    batches_claim_due,
    refresh_due_batches,
    sync_pass,
)
from tests.conftest import make_batch, make_list

API = settings.OPENAI_BASE_URL
LIST_URL = f"{API}/batches"

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and advisory locks exist only on PostgreSQL (set DATABASE_URL)",
)


@pytest.fixture
def now() -> dt.datetime:
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def incremental(db, now):
    """A full sync was done a moment ago, so passes walk the list incrementally."""
    SyncState.get(default_connection())
    SyncState.objects.filter(connection=default_connection()).update(last_full_sync_at=now)


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def later(now: dt.datetime, seconds: float) -> dt.datetime:
    return now + dt.timedelta(seconds=seconds)


def running(batch_id: str, completed: int = 10, **overrides) -> dict:
    counts = {"total": 100, "completed": completed, "failed": 0}
    return make_batch(id=batch_id, status="in_progress", request_counts=counts, **overrides)


def done(batch_id: str, **overrides) -> dict:
    return make_batch(id=batch_id, status="completed", **overrides)


def store(payload: dict, at: dt.datetime) -> Batch:
    return batch_services.batch_upsert(payload=payload, now=at).batch


def cached_and_due(now: dt.datetime, *ids: str) -> list[Batch]:
    """Running batches stored an hour ago: due now."""
    return [store(running(i), later(now, -3600)) for i in ids]


def an_old_page(now: dt.datetime) -> dict:
    """A first page of the list that brings nothing new: its batches are cached and finished."""
    payloads = [done(f"batch_old{i}") for i in range(3)]
    for payload in payloads:
        store(payload, later(now, -3600))
    return make_list(payloads, has_more=True)


def urls(upstream) -> list[str]:
    return [c.request.url for c in upstream.calls]


def retrieved(upstream) -> list[str]:
    return [u.rsplit("/", 1)[1] for u in urls(upstream) if not u.startswith(LIST_URL + "?")]


def listed(upstream) -> int:
    return sum(u.startswith(LIST_URL + "?") for u in urls(upstream))


def error_body(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("sync_batches", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- The schedule ------------------------------------------------------------------------------


def test_a_new_running_batch_is_due_again_after_the_shortest_interval(now):
    batch = store(running("batch_1"), now)

    assert batch.refresh_interval == 5.0
    assert batch.next_refresh_at == later(now, 5)


def test_the_interval_doubles_while_nothing_changes_up_to_the_cap(now, settings):
    settings.SYNC_REFRESH_MAX_SECONDS = 30
    intervals = [store(running("batch_1"), later(now, i)).refresh_interval for i in range(5)]

    assert intervals == [5, 10, 20, 30, 30]
    assert Batch.objects.get().next_refresh_at == later(now, 4 + 30)


def test_a_change_resets_the_interval_to_the_shortest(now):
    for i in range(3):
        store(running("batch_1", completed=10), later(now, i))
    assert Batch.objects.get().refresh_interval == 20

    batch = store(running("batch_1", completed=11), later(now, 10))

    assert batch.refresh_interval == 5
    assert batch.next_refresh_at == later(now, 15)


def test_the_intervals_come_from_the_settings(now, settings):
    settings.SYNC_REFRESH_MIN_SECONDS = 1
    settings.SYNC_REFRESH_GROWTH = 3

    intervals = [store(running("batch_1"), now).refresh_interval for _ in range(3)]

    assert intervals == [1, 3, 9]


def test_a_terminal_batch_is_never_due(now):
    store(running("batch_1"), now)

    batch = store(done("batch_1"), now)

    assert batch.next_refresh_at is None
    assert not Batch.objects.due_for_refresh(later(now, 10**6)).exists()


def test_an_upsert_through_batch_refresh_reschedules_too(upstream, now):
    for i in range(3):
        store(running("batch_1"), later(now, -100 + i))
    upstream.get(f"{API}/batches/batch_1", json=running("batch_1", completed=50))

    batch = batch_services.batch_refresh(batch=Batch.objects.get())

    assert batch.refresh_interval == 5
    assert abs((batch.next_refresh_at - timezone.now()).total_seconds() - 5) < 2


# --- Claiming due batches ----------------------------------------------------------------------


def test_due_batches_are_claimed_soonest_first_never_scheduled_ones_before_all(now):
    a, b, c, d = (store(running(f"batch_{x}"), now) for x in "abcd")
    Batch.objects.filter(pk=a.pk).update(next_refresh_at=None)
    Batch.objects.filter(pk=b.pk).update(next_refresh_at=later(now, -10))
    Batch.objects.filter(pk=c.pk).update(next_refresh_at=later(now, -20))
    Batch.objects.filter(pk=d.pk).update(next_refresh_at=later(now, 10))

    claimed = batches_claim_due(
        connection=default_connection(), now=now, until=later(now, 60), limit=10
    )

    assert [batch.openai_id for batch in claimed] == ["batch_a", "batch_c", "batch_b"]
    assert all(batch.next_refresh_at == later(now, 60) for batch in claimed)


def test_a_claimed_batch_is_not_claimed_again_within_its_lease(now):
    cached_and_due(now, "batch_1")

    first = batches_claim_due(
        connection=default_connection(), now=now, until=later(now, 60), limit=10
    )
    during = batches_claim_due(
        connection=default_connection(), now=later(now, 59), until=later(now, 119), limit=10
    )
    after = batches_claim_due(
        connection=default_connection(), now=later(now, 60), until=later(now, 120), limit=10
    )

    assert [len(first), len(during), len(after)] == [1, 0, 1]


def test_a_claim_takes_no_more_than_asked(now):
    cached_and_due(now, *(f"batch_{i}" for i in range(5)))

    claimed = batches_claim_due(
        connection=default_connection(), now=now, until=later(now, 60), limit=3
    )

    assert len(claimed) == 3
    assert Batch.objects.due_for_refresh(now).count() == 2


# --- Asked for by an open page -----------------------------------------------------------------


def looked_at(now: dt.datetime, batch_id: str = "batch_1", *, read: float = -600) -> Batch:
    """A running batch read from upstream READ seconds from NOW, next due in four minutes."""
    batch = store(running(batch_id), later(now, read))
    Batch.objects.filter(pk=batch.pk).update(next_refresh_at=later(now, 240))
    return batch


def test_a_look_makes_a_running_batch_due_now(now, settings):
    settings.DETAIL_REFRESH_SECONDS = 5
    batch = looked_at(now)

    asked = batch_refresh_soon(batch_id=batch.pk, now=now)

    assert asked
    assert Batch.objects.get().next_refresh_at == now
    assert [b.pk for b in batches_claim_due(
        connection=default_connection(), now=now, until=later(now, 60), limit=10
    )] == [batch.pk]  # fmt: skip


def test_looks_within_the_bound_ask_once(now, settings):
    settings.DETAIL_REFRESH_SECONDS = 5
    batch = looked_at(now)

    answers = [batch_refresh_soon(batch_id=batch.pk, now=later(now, s)) for s in (0, 1, 4, 9)]

    assert answers == [True, False, False, False]  # still due: nothing to move
    assert Batch.objects.get().next_refresh_at == now


def test_a_batch_read_from_upstream_within_the_bound_is_not_asked_for(now, settings):
    settings.DETAIL_REFRESH_SECONDS = 5
    batch = looked_at(now, read=-3)

    assert not batch_refresh_soon(batch_id=batch.pk, now=now)
    assert Batch.objects.get().next_refresh_at == later(now, 240)


def test_a_batch_due_within_the_bound_anyway_keeps_its_schedule(now, settings):
    settings.DETAIL_REFRESH_SECONDS = 5
    batch = looked_at(now)
    Batch.objects.filter(pk=batch.pk).update(next_refresh_at=later(now, 4))

    assert not batch_refresh_soon(batch_id=batch.pk, now=now)
    assert Batch.objects.get().next_refresh_at == later(now, 4)


def test_the_bound_comes_from_the_settings(now, settings):
    settings.DETAIL_REFRESH_SECONDS = 60
    batch = looked_at(now, read=-30)

    assert not batch_refresh_soon(batch_id=batch.pk, now=now)
    assert batch_refresh_soon(batch_id=batch.pk, now=later(now, 31))


def test_a_finished_batch_is_never_asked_for(now):
    batch = store(done("batch_1"), later(now, -600))

    assert not batch_refresh_soon(batch_id=batch.pk, now=now)
    assert Batch.objects.get().next_refresh_at is None


def test_looks_cost_one_retrieve_per_bound_however_many_look(upstream, now, settings):
    """Looks every second for half a minute, a pass every second: a retrieve at most every
    DETAIL_REFRESH_SECONDS (the worker's own schedule, five seconds after a change, aside)."""
    settings.DETAIL_REFRESH_SECONDS = 5
    settings.SYNC_REFRESH_MIN_SECONDS = 60  # its own schedule out of the way
    batch = looked_at(now)
    upstream.get(f"{API}/batches/batch_1", json=running("batch_1"))
    fetched_at = []
    for second in range(30):
        at = later(now, second)
        for _person in range(3):
            batch_refresh_soon(batch_id=batch.pk, now=at)
        before = len(upstream.calls)
        refresh_due_batches(
            connection=default_connection(),
            client=connection_services.get_client(),
            due_at=at,
            now=at,
        )
        if len(upstream.calls) > before:
            fetched_at.append(second)

    assert fetched_at == [0, 6, 12, 18, 24]


def test_asking_raises_no_cache_generation(now):
    batch = looked_at(now)
    before = generation.current()

    assert batch_refresh_soon(batch_id=batch.pk, now=now)
    assert generation.current() == before  # no cached page is drawn again for it


# --- A pass: what it costs and what it refreshes -----------------------------------------------


def test_a_pass_with_nothing_new_costs_one_list_call_and_one_retrieve_per_due_batch(
    upstream, now, incremental
):
    cached_and_due(now, "batch_r1", "batch_r2", "batch_r3")
    store(running("batch_later"), now)  # stored just now: not due
    upstream.get(LIST_URL, json=an_old_page(now))
    for batch_id in ("batch_r1", "batch_r2", "batch_r3"):
        upstream.get(f"{API}/batches/{batch_id}", json=running(batch_id, completed=20))

    result = sync_pass(connection=default_connection(), now=now)

    assert listed(upstream) == 1
    assert sorted(retrieved(upstream)) == ["batch_r1", "batch_r2", "batch_r3"]
    assert (result.listed_pages, result.due, result.refreshed, result.changed) == (1, 3, 3, 3)
    assert (result.new, result.errors, result.full) == (0, 0, False)


def test_a_pass_retrieves_the_most_overdue_batches_first(upstream, now, incremental, settings):
    settings.SYNC_MAX_REFRESHES_PER_PASS = 2
    for i, batch_id in enumerate(["batch_new", "batch_oldest", "batch_old"]):
        store(running(batch_id), later(now, -100 + [50, 0, 10][i]))
    upstream.get(LIST_URL, json=an_old_page(now))
    for batch_id in ("batch_oldest", "batch_old"):
        upstream.get(f"{API}/batches/{batch_id}", json=running(batch_id))

    result = sync_pass(connection=default_connection(), now=now)

    assert retrieved(upstream) == ["batch_oldest", "batch_old"]
    assert (result.due, result.refreshed) == (2, 2)


def test_a_batch_the_list_just_brought_is_not_retrieved_in_the_same_pass(
    upstream, now, incremental
):
    cached_and_due(now, "batch_moved", "batch_still")
    upstream.get(
        LIST_URL,
        json=make_list(
            [running("batch_moved", completed=60), running("batch_still")], has_more=False
        ),
    )

    result = sync_pass(connection=default_connection(), now=now)

    assert retrieved(upstream) == []
    assert (result.changed, result.due, result.refreshed) == (1, 0, 0)
    moved, still = (
        Batch.objects.get(openai_id="batch_moved"),
        Batch.objects.get(openai_id="batch_still"),
    )
    assert (moved.refresh_interval, moved.next_refresh_at) == (5, later(now, 5))
    assert (still.refresh_interval, still.next_refresh_at) == (10, later(now, 10))


def test_a_retrieve_that_changed_resets_the_interval_and_one_that_did_not_grows_it(
    upstream, now, incremental
):
    moved, still = cached_and_due(now, "batch_moved", "batch_still")
    Batch.objects.update(refresh_interval=40)
    upstream.get(LIST_URL, json=an_old_page(now))
    upstream.get(f"{API}/batches/batch_moved", json=running("batch_moved", completed=99))
    upstream.get(f"{API}/batches/batch_still", json=running("batch_still"))

    sync_pass(connection=default_connection(), now=now)

    moved.refresh_from_db()
    still.refresh_from_db()
    assert (moved.refresh_interval, moved.next_refresh_at) == (5, later(now, 5))
    assert (still.refresh_interval, still.next_refresh_at) == (80, later(now, 80))


def test_a_batch_that_finished_is_not_due_any_more(upstream, now, incremental):
    cached_and_due(now, "batch_1")
    upstream.get(LIST_URL, json=an_old_page(now))
    upstream.get(f"{API}/batches/batch_1", json=done("batch_1"))

    sync_pass(connection=default_connection(), now=now)
    second = sync_pass(connection=default_connection(), now=later(now, 3000))

    assert retrieved(upstream) == ["batch_1"]
    assert Batch.objects.get(openai_id="batch_1").status == Status.COMPLETED
    assert second.due == 0


def test_a_running_batch_upstream_answers_404_for_is_marked_and_left_alone_for_long(
    upstream, now, incremental
):
    cached_and_due(now, "batch_gone")
    upstream.get(LIST_URL, json=an_old_page(now))
    upstream.get(
        f"{API}/batches/batch_gone",
        status=404,
        json={"error": {"message": "No such batch", "type": "invalid_request_error"}},
        headers={"x-request-id": "req_404"},
    )

    first = sync_pass(connection=default_connection(), now=now)
    second = sync_pass(connection=default_connection(), now=later(now, 600))

    gone = Batch.objects.get(openai_id="batch_gone")
    assert "No such batch" in gone.last_error
    assert "req_404" in gone.last_error
    assert (gone.refresh_interval, gone.next_refresh_at) == (3600, later(now, 3600))
    assert (first.gone, first.errors, first.refreshed) == (1, 1, 0)
    assert "1 not found upstream" in str(first)
    assert second.due == 0
    assert retrieved(upstream) == ["batch_gone"]
    assert not SyncState.get(default_connection()).is_failing, (
        "one lost batch is not an upstream outage"
    )


def test_a_batch_upstream_knows_again_loses_its_error(upstream, now, incremental):
    (batch,) = cached_and_due(now, "batch_1")
    Batch.objects.filter(pk=batch.pk).update(last_error="gone for a while")
    upstream.get(f"{API}/batches/batch_1", json=running("batch_1", completed=70))

    outcome = batch_refresh_scheduled(batch=batch, client=connection_services.get_client(), now=now)

    assert outcome == "changed"
    assert Batch.objects.get().last_error == ""


def test_an_older_answer_changes_nothing_and_does_not_leave_the_batch_on_its_lease(
    upstream, now, incremental
):
    (batch,) = cached_and_due(now, "batch_1")
    store(running("batch_1", completed=80), later(now, -3000))  # the cache is ahead
    claimed = batches_claim_due(
        connection=default_connection(), now=now, until=later(now, 60), limit=1
    )
    upstream.get(f"{API}/batches/batch_1", json=running("batch_1", completed=40))

    outcome = batch_refresh_scheduled(
        batch=claimed[0],
        client=connection_services.get_client(),
        now=now,
        lease_until=later(now, 60),
    )

    batch.refresh_from_db()
    assert outcome == "stale"
    assert batch.request_completed == 80
    assert batch.next_refresh_at == later(now, batch.refresh_interval)


def test_a_stop_request_between_fetches_gives_back_the_rest(upstream, now, incremental):
    cached_and_due(now, "batch_1", "batch_2", "batch_3")
    for i in (1, 2, 3):
        upstream.get(f"{API}/batches/batch_{i}", json=running(f"batch_{i}"))
    stop = threading.Event()

    def stop_after_first() -> bool:
        if retrieved(upstream):
            stop.set()
        return stop.is_set()

    result = refresh_due_batches(
        connection=default_connection(),
        client=connection_services.get_client(),
        due_at=now,
        now=now,
        stop=stop_after_first,
    )

    assert (result.due, result.refreshed) == (3, 1)
    assert Batch.objects.due_for_refresh(now).count() == 2, "given back, due again"


# --- The list ----------------------------------------------------------------------------------


def test_each_pass_walks_the_list_until_a_page_brings_nothing_new(upstream, now, incremental):
    upstream.get(LIST_URL, json=make_list([done("batch_4"), done("batch_3")], has_more=True))
    upstream.get(LIST_URL, json=an_old_page(now))

    result = sync_pass(connection=default_connection(), now=now)

    assert (result.listed_pages, result.new, result.full) == (2, 2, False)
    assert listed(upstream) == 2


def test_finished_batches_a_page_shows_unchanged_are_noted_without_an_upsert_each(
    upstream, now, incremental, monkeypatch
):
    page = an_old_page(now)
    upserts = []
    real_upsert = sync.batch_upsert
    monkeypatch.setattr(sync, "batch_upsert", lambda **kw: upserts.append(kw) or real_upsert(**kw))
    upstream.get(LIST_URL, json=page)

    result = sync_pass(connection=default_connection(), now=later(now, 60))

    assert (result.listed_pages, result.new, result.changed) == (1, 0, 0)
    assert upserts == []
    synced = set(Batch.objects.values_list("synced_at", flat=True))
    assert synced == {later(now, 60)}


def test_the_first_pass_is_a_full_sync_and_rebuilds_the_tallies(upstream, now):
    store(done("batch_1"), now)
    BatchTally.objects.update(count=41)  # wrong, as after deletions outside batchweb
    upstream.get(LIST_URL, json=make_list([done("batch_2")], has_more=True))
    upstream.get(LIST_URL, json=make_list([done("batch_1")], has_more=True))
    upstream.get(LIST_URL, json=make_list([done("batch_0")], has_more=False))

    result = sync_pass(connection=default_connection(), now=now)

    assert (result.full, result.listed_pages, result.new) == (True, 3, 2)
    assert "full sync" in str(result)
    assert SyncState.get(default_connection()).last_full_sync_at == now
    assert sum(BatchTally.objects.values_list("count", flat=True)) == 3


def test_a_full_sync_comes_round_again_after_the_set_time(upstream, now, settings):
    settings.SYNC_FULL_EVERY_SECONDS = 3600
    SyncState.get(default_connection())
    SyncState.objects.update(last_full_sync_at=later(now, -3599))
    upstream.get(LIST_URL, json=an_old_page(now))
    upstream.get(LIST_URL, json=an_old_page(now))
    upstream.get(LIST_URL, json=make_list([], has_more=False))

    before = sync_pass(connection=default_connection(), now=now)
    after = sync_pass(connection=default_connection(), now=later(now, 1))

    assert (before.full, before.listed_pages) == (False, 1)
    assert (after.full, after.listed_pages) == (True, 2)
    assert SyncState.get(default_connection()).last_full_sync_at == later(now, 1)


def test_the_list_is_skipped_while_another_worker_walks_it(upstream, now, monkeypatch):
    @contextmanager
    def held_elsewhere(connection):
        yield False

    monkeypatch.setattr(sync, "list_lock", held_elsewhere)
    cached_and_due(now, "batch_1")
    upstream.get(f"{API}/batches/batch_1", json=running("batch_1"))

    result = sync_pass(connection=default_connection(), now=now)

    assert listed(upstream) == 0
    assert result.refreshed == 1
    assert "list skipped: another worker is listing" in str(result)
    assert SyncState.get(default_connection()).last_full_sync_at is None, (
        "the full sync is left to the lister"
    )


@on_postgresql
def test_on_postgresql_the_list_lock_is_an_advisory_lock(upstream, now):
    """One advisory lock per connection: (LIST_LOCK_KEY, connection id)."""
    key = [sync.LIST_LOCK_KEY, default_connection().pk]
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s::int, %s::int)", key)
            assert cursor.fetchone()[0]

        skipped = sync_pass(connection=default_connection(), now=now)

        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s::int, %s::int)", key)
        upstream.get(LIST_URL, json=make_list([], has_more=False))
        listed_now = sync_pass(connection=default_connection(), now=now)
    finally:
        other.close()

    assert skipped.listed_pages == 0 and "list skipped" in skipped.note
    assert listed_now.listed_pages == 1
    with connection.cursor() as cursor:  # released: another session can take it
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        assert cursor.fetchone()[0] == 0


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_claim_skips_rows_another_worker_has_locked(now):
    held, _ = cached_and_due(now, "batch_held", "batch_free")
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT id FROM batches_batch WHERE id = %s FOR UPDATE", [held.pk])
            claimed = batches_claim_due(
                connection=default_connection(), now=now, until=later(now, 60), limit=10
            )
            cursor.execute("ROLLBACK")
    finally:
        other.close()

    assert [batch.openai_id for batch in claimed] == ["batch_free"]


# --- Upstream failures and the backoff -----------------------------------------------------------


def test_an_upstream_failure_is_recorded_for_the_pages_and_backs_off(
    upstream, no_sleep, now, incremental
):
    for _ in range(3):
        upstream.get(
            LIST_URL, status=503, json=error_body("overloaded"), headers={"x-request-id": "req_1"}
        )

    result = sync_pass(connection=default_connection(), now=now)

    assert result.failed and "overloaded" in result.error
    assert result.backoff_seconds == 10
    assert str(result).startswith("The OpenAI API is not available right now (HTTP 503)")
    state = SyncState.get(default_connection())
    assert state.is_failing
    assert state.last_error_request_id == "req_1"
    assert "overloaded" in state.last_error
    assert state.backoff_until == later(now, 10)


def test_retry_after_is_honoured(upstream, no_sleep, now, incremental):
    for _ in range(3):
        upstream.get(
            LIST_URL, status=429, json=error_body("slow down"), headers={"retry-after": "45"}
        )

    result = sync_pass(connection=default_connection(), now=now)

    assert result.backoff_seconds == 45
    assert SyncState.get(default_connection()).backoff_until == later(now, 45)


def test_a_pass_while_backing_off_calls_nothing(upstream, now, incremental):
    SyncState.objects.update(backoff_until=later(now, 10))
    cached_and_due(now, "batch_1")

    result = sync_pass(connection=default_connection(), now=now)

    assert len(upstream.calls) == 0
    assert result.backoff_seconds == 10
    assert "upstream failing: next try in 10 s" in str(result)
    assert backoff_remaining(connection=default_connection(), now=later(now, 10)) == 0


def test_the_backoff_doubles_while_failures_go_on_up_to_the_cap(
    upstream, no_sleep, now, incremental, settings
):
    settings.SYNC_BACKOFF_MAX_SECONDS = 35
    upstream.get(LIST_URL, status=500, json=error_body("boom"))
    waits, at = [], now
    for _ in range(4):
        result = sync_pass(connection=default_connection(), now=at)
        waits.append(result.backoff_seconds)
        at = later(at, result.backoff_seconds)

    assert waits == [10, 20, 35, 35]


def test_a_pass_that_works_again_clears_the_failure(upstream, no_sleep, now, incremental):
    for _ in range(3):
        upstream.get(LIST_URL, status=500, json=error_body("boom"))
    sync_pass(connection=default_connection(), now=now)
    upstream.get(LIST_URL, json=make_list([], has_more=False))

    sync_pass(connection=default_connection(), now=later(now, 10))

    state = SyncState.get(default_connection())
    assert not state.is_failing
    assert state.backoff_until is None
    assert state.last_success_at == later(now, 10)
    assert "boom" in state.last_error, "kept for the record"


def test_claimed_batches_are_given_back_when_upstream_fails_mid_pass(
    upstream, no_sleep, now, incremental
):
    cached_and_due(now, "batch_1", "batch_2", "batch_3")
    upstream.get(LIST_URL, json=an_old_page(now))
    upstream.get(f"{API}/batches/batch_1", json=running("batch_1", completed=30))
    upstream.get(f"{API}/batches/batch_2", status=500, json=error_body("boom"))

    result = sync_pass(connection=default_connection(), now=now)

    assert (result.due, result.refreshed, result.errors) == (3, 1, 1)
    assert "batch_3" not in retrieved(upstream)
    due = set(Batch.objects.due_for_refresh(now).values_list("openai_id", flat=True))
    assert due == {"batch_2", "batch_3"}


# --- The line of each pass ---------------------------------------------------------------------


def test_the_line_of_a_pass_has_every_count():
    result = PassResult(listed_pages=1, new=2, changed=3, due=5, refreshed=4, gone=1, errors=1)
    result.duration = 0.25

    assert str(result) == (
        "1 pages listed, 2 new, 3 changed, 4 refreshed of 5 due, 1 errors in 0.25 s; "
        "1 not found upstream"
    )


def test_the_worker_writes_one_line_per_pass(upstream, no_sleep, incremental, caplog):
    upstream.get(LIST_URL, json=make_list([done("batch_1")], has_more=False))

    out, err = run("--loop", "--max-passes", "3", "--interval", "0")

    lines = out.splitlines()
    assert len(lines) == 4
    assert all(line.startswith("sync default: 1 pages listed, ") for line in lines[:3])
    assert "1 new" in lines[0] and "0 new" in lines[1]
    assert lines[3] == "Sync worker stopped."
    assert err == ""
    client_lines = [r for r in caplog.records if r.name == "batches.openai_client"]
    assert client_lines == [], "the client's line per call is kept for -v 2"


# --- The loop ----------------------------------------------------------------------------------


def test_a_database_error_is_reported_and_the_loop_goes_on(monkeypatch):
    monkeypatch.setattr(command_module, "DB_BACKOFF_MIN", 0.01)
    outcomes = [OperationalError("server closed the connection unexpectedly"), PassResult()]

    def one_pass(**kwargs):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(sync_services, "sync_pass", one_pass)

    out, err = run("--loop", "--max-passes", "2", "--interval", "0")

    assert "sync default failed: database error (OperationalError: server closed" in err
    assert "next try in 0 s" in err
    assert out.count("sync default: ") == 1
    assert outcomes == []


def test_the_signal_handlers_are_put_back_even_when_a_pass_crashes(monkeypatch):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def crash(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sync_services, "sync_pass", crash)

    with pytest.raises(RuntimeError):
        run("--loop", "--max-passes", "2", "--interval", "0")

    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_sigterm_during_the_wait_stops_the_loop_at_once(monkeypatch):
    monkeypatch.setattr(sync_services, "sync_pass", lambda **kwargs: PassResult())
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    try:
        out, _ = run("--loop", "--interval", "30", "--max-passes", "3")
    finally:
        timer.cancel()

    assert time.monotonic() - started < 5
    assert out.count("sync default: ") == 1
    assert out.rstrip().endswith("Sync worker stopped.")


def test_the_worker_leaves_a_long_retry_after_to_its_backoff(upstream, no_sleep, incremental):
    upstream.get(LIST_URL, status=429, json=error_body("slow down"), headers={"retry-after": "45"})
    started = timezone.now()

    _, err = run("--loop", "--max-passes", "1", "--interval", "0")

    assert listed(upstream) == 1, "not retried inside the client"
    assert no_sleep == []
    assert "Next try in 45 s" in err
    wait = (SyncState.get(default_connection()).backoff_until - started).total_seconds()
    assert 44 <= wait <= 47
