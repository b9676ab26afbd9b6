"""The sync worker (``sync_services.batches_sync`` and ``manage.py sync_batches``) against the
simulator: full and incremental walks, a list that never ends, running batches that move on as
the simulated clock advances, and an upstream outage."""

from __future__ import annotations

import io
import signal
import time

import pytest
from django.core.management import CommandError, call_command

from batches.models import Batch, Status, SyncState, default_connection
from batches.services import sync as sync_services
from tests.integration.conftest import calls

pytestmark = pytest.mark.django_db


@pytest.fixture
def keep_signal_handlers():
    """``sync_batches --loop`` installs SIGTERM/SIGINT handlers; put the runner's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_first_sync_stores_all_250_batches_in_three_list_calls_and_a_second_needs_one(sim):
    sim.seed_batches(count=250, status="completed")

    first = sync_services.batches_sync(connection=default_connection())

    assert Batch.objects.count() == 250
    assert (first.pages, first.created, first.stopped_because) == (3, 250, "last page")
    assert calls(sim, "listBatches") == 3

    second = sync_services.batches_sync(connection=default_connection())

    assert calls(sim, "listBatches") == 4  # one more: the newest page brought nothing new
    assert (second.pages, second.created, second.updated) == (1, 0, 0)
    assert second.stopped_because == "nothing new"
    assert Batch.objects.count() == 250
    assert SyncState.get(default_connection()).last_success_at is not None


def test_a_list_that_never_ends_is_walked_to_the_repeated_cursor_and_no_further(sim):
    sim.seed_batches(count=250, status="completed")
    sim.set_faults({"endless_list": True})

    started = time.monotonic()
    result = sync_services.batches_sync(connection=default_connection(), full=True)

    assert time.monotonic() - started < 10
    assert result.stopped_because == "repeated cursor"
    assert result.pages == calls(sim, "listBatches") == 4  # the oldest page came back once more
    assert Batch.objects.count() == 250


def test_a_list_that_never_ends_stops_at_the_page_cap(sim):
    sim.seed_batches(count=250, status="completed")
    sim.set_faults({"endless_list": True})

    result = sync_services.batches_sync(connection=default_connection(), full=True, max_pages=2)

    assert result.stopped_because == "page cap of 2 reached"
    assert calls(sim, "listBatches") == 2
    assert Batch.objects.count() == 200


def test_an_incremental_sync_of_a_list_that_never_ends_stops_once_nothing_is_new(sim):
    sim.seed_batches(count=30, status="completed")
    sim.set_faults({"endless_list": True})

    result = sync_services.batches_sync(connection=default_connection())

    assert result.stopped_because == "nothing new"
    assert calls(sim, "listBatches") == 2
    assert Batch.objects.count() == 30


def test_running_batches_are_refreshed_and_move_on_as_the_simulated_clock_advances(sim):
    # Five long batches running, then 100 finished ones that are newer in the list, so an
    # incremental pass stops after the first page and only the refresh can see the five move.
    sim.seed_batches(count=5, status="in_progress", requests=1000)
    sim.advance(200)
    sim.seed_batches(count=100, status="completed")
    sync_services.batches_sync(connection=default_connection())
    running = Batch.objects.filter(status=Status.IN_PROGRESS)
    assert running.count() == 5
    before = {b.openai_id: b.requests_done for b in running}

    sim.advance(100)
    retrieved = calls(sim, "retrieveBatch")
    listed = calls(sim, "listBatches")
    result = sync_services.batches_sync(connection=default_connection())

    assert calls(sim, "listBatches") - listed == 1
    assert result.refreshed == 5
    assert calls(sim, "retrieveBatch") - retrieved == 5
    for batch in Batch.objects.filter(openai_id__in=before):
        assert batch.status == Status.IN_PROGRESS
        assert batch.requests_done > before[batch.openai_id]

    sim.advance(2000)  # past the 1,000 requests and finalizing
    sync_services.batches_sync(connection=default_connection())

    finished = Batch.objects.filter(openai_id__in=before)
    assert {b.status for b in finished} == {Status.COMPLETED}
    assert all(b.output_file_id and b.request_completed == 1000 for b in finished)
    assert not Batch.objects.running().exists()


def test_the_sync_command_loops_for_the_passes_asked_and_stops(sim, keep_signal_handlers):
    sim.seed_batches(count=120, status="completed")
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "sync_batches", "--loop", "--max-passes", "2", "--interval", "0", stdout=out, stderr=err
    )

    lines = out.getvalue().splitlines()
    assert sum(line.startswith("sync default: ") for line in lines) == 2
    assert "120 new" in lines[0] and "0 new" in lines[1]
    assert lines[-1] == "Sync worker stopped."
    assert err.getvalue() == ""
    assert Batch.objects.count() == 120
    assert calls(sim, "listBatches") == 3  # two pages, then one


def test_an_upstream_outage_is_recorded_and_the_sync_loop_keeps_going(
    sim, keep_signal_handlers, waits, settings
):
    settings.SYNC_BACKOFF_MIN_SECONDS = 0  # the worker's own backoff is tested in test_worker
    sim.seed_batches(count=3, status="completed")
    sim.set_faults({"server_error": 1000})
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "sync_batches", "--loop", "--max-passes", "2", "--interval", "0", stdout=out, stderr=err
    )

    assert err.getvalue().count("sync default failed") == 2
    assert "Sync worker stopped." in out.getvalue()
    assert calls(sim, "listBatches") == 6  # each pass: one try and two retries
    assert len(waits) == 4
    state = SyncState.get(default_connection())
    assert state.is_failing
    assert "HTTP 500" in state.last_error
    assert state.last_error_request_id.startswith("req_")
    assert state.last_success_at is None
    assert Batch.objects.count() == 0

    sim.set_faults({"server_error": 0})
    call_command("sync_batches", stdout=io.StringIO())

    state.refresh_from_db()
    assert not state.is_failing
    assert state.last_success_at is not None
    assert Batch.objects.count() == 3


def test_a_single_sync_pass_during_an_outage_fails_the_command_with_the_reason(sim):
    sim.set_faults({"server_error": 1000})

    with pytest.raises(CommandError, match="HTTP 500"):
        call_command("sync_batches", stdout=io.StringIO())

    assert SyncState.get(default_connection()).is_failing
