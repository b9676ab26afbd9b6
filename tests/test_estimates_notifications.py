"""An email to the people who asked, once, when a running batch may not finish in time."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User

from batches.models import Batch, NotificationPreference, Outbox, Watch, default_connection
from batches.services.batches import batch_upsert
from batches.services.connections import get_client
from batches.services.housekeeping import housekeeping
from batches.services.notifications import notifications_at_risk
from batches.services.sync import PassResult
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def progressing(openai_id: str, *, by: User, deadline: dt.datetime) -> Batch:
    """Seen every 2 minutes for 20 minutes at 10 requests a minute: 800 left at minute 20."""
    for m in range(0, 21, 2):
        payload = make_batch(
            id=openai_id,
            created_at=int(minutes(-60).timestamp()),
            expires_at=int(deadline.timestamp()),
            request_counts={"total": 1000, "completed": m * 10, "failed": 0},
            metadata={"batchweb_user": by.username},
        )
        batch = batch_upsert(payload=payload, now=minutes(m)).batch
    return batch


def wants_at_risk(*users: User) -> None:
    for user in users:
        NotificationPreference.objects.create(user=user, at_risk=True)


def test_the_creator_and_watchers_who_asked_are_told_once(submitter, viewer, operator):
    batch = progressing("batch_late", by=submitter, deadline=minutes(60))
    Watch.objects.create(user=viewer, batch=batch)
    Watch.objects.create(user=operator, batch=batch)  # watches, but did not ask
    wants_at_risk(submitter, viewer)

    assert notifications_at_risk(now=minutes(20)) == 2
    assert notifications_at_risk(now=minutes(21)) == 0

    rows = {row.recipient: row for row in Outbox.objects.all()}
    assert set(rows) == {"sam@example.com", "vic@example.com"}
    row = rows["sam@example.com"]
    assert row.key == f"{batch.pk}:at_risk:email:sam@example.com"
    assert (row.event, row.user, row.batch) == ("at_risk", submitter, batch)
    assert "may not finish before its deadline" in row.subject
    assert "At risk: may not finish before the deadline in 40 min" in row.body
    assert "you created this batch" in row.body


def test_nobody_is_told_about_a_batch_on_track_or_when_they_did_not_ask(submitter, viewer):
    progressing("batch_safe", by=submitter, deadline=minutes(20 * 60))
    wants_at_risk(submitter)
    late = progressing("batch_late", by=viewer, deadline=minutes(60))  # viewer did not ask

    assert notifications_at_risk(now=minutes(20)) == 0
    assert not Outbox.objects.exists()
    assert late.is_terminal is False


def test_the_worker_s_housekeeping_sends_the_warning(submitter, upstream):
    progressing("batch_late", by=submitter, deadline=minutes(60))
    wants_at_risk(submitter)
    connection = default_connection()

    housekeeping(
        connection=connection,
        client=get_client(connection=connection),
        now=minutes(20),
        result=PassResult(),
    )

    assert list(Outbox.objects.values_list("recipient", "event")) == [
        ("sam@example.com", "at_risk")
    ]
