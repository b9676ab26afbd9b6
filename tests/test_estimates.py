"""Finish-time estimates: the arithmetic, the deadline, and the history they are made from."""

from __future__ import annotations

import datetime as dt

import pytest

from batches.models import Batch, ProgressSnapshot, default_connection
from batches.services.batches import batch_upsert
from batches.services.estimates import (
    SNAPSHOTS_KEPT,
    about,
    batch_eta,
    forecast,
    progress_snapshots_thin,
)
from batches.services.housekeeping import housekeeping
from batches.services.sync import PassResult
from tests.conftest import make_batch

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def steady(until: int = 20, per_minute: int = 10) -> list[tuple[dt.datetime, int]]:
    """A point every 2 minutes, `per_minute` requests a minute."""
    return [(minutes(m), m * per_minute) for m in range(0, until + 1, 2)]


# --- The arithmetic ---------------------------------------------------------------------------


def test_a_steady_batch_finishes_when_the_rate_says_with_a_narrow_range():
    result = forecast(steady(), total=1000, now=minutes(20))

    assert result.state == "estimate"
    assert result.rate == pytest.approx(10 / 60)
    assert result.expected == minutes(100)  # 800 left at 10 a minute
    assert minutes(90) < result.earliest < result.expected < result.latest < minutes(110)


def test_an_accelerating_batch_gets_a_wider_range_with_an_earlier_early_end():
    points = [(minutes(m), m * m) for m in range(0, 21, 2)]  # faster and faster: 400 done
    same_rate = forecast(steady(per_minute=20), total=1000, now=minutes(20))  # 400 done too

    result = forecast(points, total=1000, now=minutes(20))

    assert result.state == "estimate"
    assert result.earliest < result.expected < result.latest
    # The window's late half ran at 30 a minute: at that pace the 600 left take 20 minutes.
    assert result.earliest == minutes(40)
    assert result.earliest < same_rate.earliest and result.latest > same_rate.latest


def test_a_batch_that_has_not_moved_for_half_an_hour_is_stalled():
    result = forecast(steady(until=10), total=1000, now=minutes(50))

    assert result.state == "stalled"
    assert result.stalled_seconds == 40 * 60
    assert result.expected is None


def test_a_pause_shorter_than_the_stall_limit_only_slows_the_estimate():
    result = forecast(steady(until=10), total=1000, now=minutes(25))

    assert result.state == "estimate"
    assert result.rate < 10 / 60  # the 15 minutes without a change count


def test_all_requests_done_is_done():
    assert forecast(steady(), total=200, now=minutes(20)).state == "done"


@pytest.mark.parametrize(
    "points, now",
    [
        ([], minutes(10)),
        ([(minutes(0), 0)], minutes(10)),  # one snapshot: no rate
        ([(minutes(0), 0), (minutes(2), 20)], minutes(3)),  # three minutes of history
        ([(minutes(0), 40), (minutes(4), 40), (minutes(8), 40)], minutes(10)),  # no change
    ],
)
def test_too_little_history_is_too_early_to_say(points, now):
    assert forecast(points, total=1000, now=now).state == "too_early"


def test_durations_are_rounded_the_way_people_estimate():
    assert about(30) == "1 min"
    assert about(7 * 60) == "7 min"
    assert about(97 * 60) == "1 h 35 min"
    assert about(4 * 3600 + 17 * 60) == "4 h 20 min"
    assert about(13 * 3600 + 20 * 60) == "13 h"


# --- Against the deadline ---------------------------------------------------------------------


def running(*, done: int, total: int = 1000, deadline: dt.datetime | None = None, **fields):
    """A batch in memory: batch_eta needs no database when it is given the snapshots."""
    return Batch(
        connection_id=1,  # given, so that no default is looked up
        openai_id="batch_eta",
        status=fields.pop("status", "in_progress"),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        created_at=minutes(-60),
        in_progress_at=minutes(-59),
        expires_at=deadline or minutes(-60) + dt.timedelta(hours=24),
        request_total=total,
        request_completed=done,
        request_failed=0,
        synced_at=minutes(20),
        **fields,
    )


def test_a_batch_well_ahead_of_its_deadline_is_on_track_in_words():
    eta = batch_eta(batch=running(done=200), now=minutes(20), snapshots=steady())

    assert eta.state == "on_track" and not eta.at_risk
    assert eta.text() == (
        "Expected to finish in about 1 h 20 min (between 1 h 15 min and 1 h 30 min), "
        "well before the deadline."
    )
    assert eta.short() == "≈ 1 h 20 min left"


def test_a_batch_expected_after_its_deadline_is_at_risk():
    eta = batch_eta(
        batch=running(done=200, deadline=minutes(80)), now=minutes(20), snapshots=steady()
    )

    assert eta.at_risk
    assert eta.text().startswith("At risk: may not finish before the deadline in 1 h ")
    assert "expected in about 1 h 20 min" in eta.text()
    assert eta.short() == "at risk"


def test_a_batch_whose_late_end_passes_the_deadline_is_at_risk_too():
    # Expected at +80 min, the late end near +89 min: a deadline at +85 min is not safe.
    eta = batch_eta(
        batch=running(done=200, deadline=minutes(105)), now=minutes(20), snapshots=steady()
    )

    assert eta.expected < eta.deadline < eta.latest
    assert eta.at_risk


def test_a_running_batch_past_its_deadline_is_at_risk():
    eta = batch_eta(
        batch=running(done=200, deadline=minutes(10)), now=minutes(20), snapshots=steady()
    )

    assert eta.at_risk
    assert "may expire" in eta.text()


def test_a_stalled_batch_says_for_how_long_and_the_deadline():
    eta = batch_eta(batch=running(done=100), now=minutes(55), snapshots=steady(until=10))

    assert eta.state == "stalled"
    assert eta.text().startswith("Stalled for 45 min: no request done since.")
    assert "The deadline is in" in eta.text()
    assert eta.short() == "stalled"


def test_an_unknown_total_or_too_little_history_is_too_early_to_say():
    no_total = batch_eta(batch=running(done=0, total=0), now=minutes(20), snapshots=steady())
    short = batch_eta(
        batch=running(done=20), now=minutes(3), snapshots=[(minutes(0), 0), (minutes(2), 20)]
    )

    assert no_total.state == short.state == "too_early"
    assert "Too early to say" in no_total.text() and "no request count yet" in no_total.text()
    assert "not enough progress seen yet" in short.text()
    assert short.short() == ""  # the list says nothing rather than "too early" on every row


@pytest.mark.parametrize(
    "status, words",
    [("validating", "Validating: starts soon."), ("finalizing", "Finalizing: finishing.")],
)
def test_validating_and_finalizing_are_said_in_words(status, words):
    eta = batch_eta(batch=running(done=0, status=status), now=minutes(20), snapshots=[])

    assert eta.text() == words and not eta.at_risk


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
def test_a_finished_batch_has_no_estimate(status):
    assert batch_eta(batch=running(done=1000, status=status), now=minutes(20), snapshots=[]) is None


# --- The history --------------------------------------------------------------------------------


def store(*, at: float, completed: int, status: str = "in_progress", **fields) -> Batch:
    fields.setdefault("created_at", int(minutes(-5).timestamp()))
    fields.setdefault("expires_at", int(minutes(24 * 60 - 5).timestamp()))
    payload = make_batch(
        id="batch_hist",
        status=status,
        request_counts={"total": 1000, "completed": completed, "failed": 0},
        **fields,
    )
    return batch_upsert(payload=payload, now=minutes(at)).batch


def snapshots() -> list[tuple[float, int]]:
    return [
        ((s.at - T0).total_seconds() / 60, s.completed)
        for s in ProgressSnapshot.objects.order_by("at", "id")
    ]


@pytest.mark.django_db
def test_snapshots_are_written_when_counts_change_and_not_on_an_unchanged_refresh():
    store(at=0, completed=0)  # first seen running: the first point
    store(at=1, completed=0)  # the same answer again
    store(at=2, completed=50)
    store(at=2.5, completed=60)  # less than a minute after the last one: skipped
    store(at=4, completed=60)  # unchanged
    store(at=5, completed=90, metadata={"job": "renamed"})
    store(at=6, completed=90, metadata={"job": "renamed again"})  # not a count

    assert snapshots() == [(0, 0), (2, 50), (5, 90)]


@pytest.mark.django_db
def test_a_status_change_is_always_written_and_a_batch_first_seen_finished_never():
    store(at=0, completed=10)
    store(at=0.5, completed=1000, status="completed", completed_at=int(minutes(0.5).timestamp()))
    batch_upsert(payload=make_batch(id="batch_old", status="completed"), now=minutes(1))

    assert snapshots() == [(0, 10), (0.5, 1000)]


@pytest.mark.django_db
def test_the_batch_page_estimate_reads_the_stored_history():
    for m in range(0, 21, 2):
        store(at=m, completed=m * 10)

    eta = batch_eta(batch=Batch.objects.get(), now=minutes(20))

    assert eta.state == "on_track"
    assert eta.expected == minutes(100)


@pytest.mark.django_db
def test_housekeeping_thins_finished_batches_and_drops_old_ones(upstream):
    connection = default_connection()
    done = store(at=0, completed=0, status="completed", completed_at=int(minutes(300).timestamp()))
    ProgressSnapshot.objects.all().delete()
    ProgressSnapshot.objects.bulk_create(
        ProgressSnapshot(batch=done, at=minutes(m), completed=m, failed=0, total=1000)
        for m in range(200)
    )
    live = batch_upsert(payload=make_batch(id="batch_live"), now=minutes(0)).batch
    ProgressSnapshot.objects.bulk_create(
        ProgressSnapshot(batch=live, at=minutes(m), completed=m, failed=0, total=1000)
        for m in range(1, 100)
    )
    old = batch_upsert(
        payload=make_batch(
            id="batch_ancient", status="completed", completed_at=int(T0.timestamp()) - 40 * 86400
        ),
        now=minutes(0),
    ).batch
    ProgressSnapshot.objects.create(batch=old, at=T0 - dt.timedelta(days=40), completed=1, total=2)

    from batches.services.connections import get_client

    housekeeping(
        connection=connection,
        client=get_client(connection=connection),
        now=minutes(400),
        result=PassResult(),
    )

    kept = list(done.progress_snapshots.order_by("at").values_list("completed", flat=True))
    assert len(kept) == SNAPSHOTS_KEPT
    assert kept[0] == 0 and kept[-1] == 199  # the first and the last are kept
    assert live.progress_snapshots.count() == 100  # a running batch keeps its history
    assert not old.progress_snapshots.exists()
    # A second round has nothing left to do.
    assert progress_snapshots_thin(now=minutes(400), finished_since=minutes(0)) == 0
