"""Email notifications against a real SMTP server on loopback (aiosmtpd, in this process):
exactly one email per recipient with two workers, retries while the server fails, and nothing
lost when a worker dies mid-send."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import threading
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth.models import Group, User
from django.db import connection, connections
from django.utils import timezone

from batches.models import Batch, Event, Outbox, Watch
from batches.services.batches import batch_upsert
from batches.services.notifications import notifications_deliver, outbox_claim_due
from tests.conftest import make_batch

META = {"job": "nightly-eval", "batchweb_user": "sam"}


class Inbox:
    """What the SMTP server received. `refuse` makes it answer the next N messages with a
    temporary failure, as a busy or broken relay does."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd calls it so
        with self.lock:
            if self.refuse:
                self.refuse -= 1
                return "451 4.3.0 Try again later"
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.messages.append(parsed)
        return "250 OK"

    def recipients(self) -> list[str]:
        with self.lock:
            return sorted(str(m["To"]) for m in self.messages)


class LoopbackController(Controller):
    """aiosmtpd's controller on a port the system chooses (port 0)."""

    def _trigger_server(self) -> None:
        if self.port == 0:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.fixture
def smtp(settings) -> Iterator[tuple[Inbox, LoopbackController]]:
    inbox = Inbox()
    controller = LoopbackController(inbox, hostname="127.0.0.1", port=0)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 2
    settings.NOTIFY_MAX_ATTEMPTS = 3
    settings.NOTIFY_BACKOFF_MIN_SECONDS = 30.0
    settings.NOTIFY_BACKOFF_MAX_SECONDS = 3600.0
    settings.NOTIFY_LEASE_SECONDS = 60.0
    settings.BATCHWEB_NOTIFY_WEBHOOK_URL = ""
    try:
        yield inbox, controller
    finally:
        if controller._thread is not None:
            controller.stop()


def team() -> list[User]:
    """sam creates the batch; four colleagues watch it."""
    viewers = Group.objects.get(name="Viewers")
    sam = User.objects.create_user("sam", "sam@example.com", "pw-sam-123")
    sam.groups.add(Group.objects.get(name="Submitters"))
    people = [sam]
    for name in ("vic", "val", "vera", "vince"):
        person = User.objects.create_user(name, f"{name}@example.com", f"pw-{name}-123")
        person.groups.add(viewers)
        people.append(person)
    return people


def a_batch_ends(people: list[User]) -> Batch:
    batch = batch_upsert(
        payload=make_batch(id="batch_smtp", status="in_progress", metadata=META)
    ).batch
    for person in people[1:]:
        Watch.objects.create(user=person, batch=batch)
    return batch_upsert(
        payload=make_batch(
            id="batch_smtp",
            status="completed",
            metadata=META,
            completed_at=1764008040,
            request_counts={"total": 100, "completed": 100, "failed": 0},
        )
    ).batch


def soon() -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=1)


EVERYONE = sorted(f"{n}@example.com" for n in ("sam", "vic", "val", "vera", "vince"))


@pytest.mark.django_db
def test_each_recipient_gets_exactly_one_email_from_two_workers_taking_turns(smtp):
    inbox, _ = smtp
    a_batch_ends(team())
    now = soon()
    # Worker A claims two rows and is still sending them when worker B runs.
    held = outbox_claim_due(now=now, until=now + dt.timedelta(seconds=60), limit=2)

    b = notifications_deliver(now=now, limit=50)

    assert (len(held), b.claimed, b.sent) == (2, 3, 3)
    assert notifications_deliver(now=now).claimed == 0  # A's rows are still A's
    # A dies without marking them; once its lease runs out they are delivered, once.
    late = notifications_deliver(now=now + dt.timedelta(seconds=61))
    assert late.sent == 2
    assert notifications_deliver(now=now + dt.timedelta(hours=1)).claimed == 0
    assert inbox.recipients() == EVERYONE
    assert Outbox.objects.filter(state="sent").count() == 5
    message = inbox.messages[0]
    assert message["Subject"] == "Batch nightly-eval completed (OpenAI)"
    assert "100 succeeded, 0 failed, 100 in all" in message.get_content()


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="two workers at once need row locks: PostgreSQL only (set DATABASE_URL)",
)
@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_send_exactly_one_email_per_recipient(smtp):
    inbox, _ = smtp
    a_batch_ends(team())
    now = soon()
    ready = threading.Barrier(2)
    results = []
    errors = []

    def worker() -> None:
        try:
            ready.wait(timeout=5)
            for _ in range(3):
                results.append(notifications_deliver(now=now, limit=2))
        except Exception as error:  # reported below, with the thread's failure
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sum(r.sent for r in results) == 5
    assert inbox.recipients() == EVERYONE


@pytest.mark.django_db
def test_a_stopped_mail_server_is_retried_with_backoff_then_dead_lettered(smtp):
    inbox, controller = smtp
    batch = a_batch_ends(team()[:2])
    controller.stop()
    now = soon()

    first = notifications_deliver(now=now)

    assert (first.claimed, first.retrying) == (2, 2)
    for row in Outbox.objects.all():
        assert row.attempts == 1 and row.state == "pending"
        assert (row.next_attempt_at - now).total_seconds() == 30
        assert row.last_error.startswith("Could not reach the mail server: ConnectionRefusedError")
    second = notifications_deliver(now=now + dt.timedelta(seconds=30))
    assert second.retrying == 2
    row = Outbox.objects.first()
    assert (row.next_attempt_at - now).total_seconds() == 30 + 60

    third = notifications_deliver(now=now + dt.timedelta(seconds=90))

    assert third.dead == 2
    assert set(Outbox.objects.values_list("state", flat=True)) == {"dead"}
    events = Event.objects.filter(action=Event.Action.NOTIFY_FAILED)
    assert sorted(e.target for e in events) == [
        "email to sam@example.com",
        "email to vic@example.com",
    ]
    assert all(e.batch == batch and e.failed for e in events)
    assert inbox.messages == []


@pytest.mark.django_db
def test_a_mail_server_that_refuses_for_a_while_gets_every_email_in_the_end(smtp):
    inbox, _ = smtp
    a_batch_ends(team())
    inbox.refuse = 2
    now = soon()

    first = notifications_deliver(now=now)
    second = notifications_deliver(now=now + dt.timedelta(seconds=30))

    assert (first.sent, first.retrying) == (3, 2)
    assert (second.claimed, second.sent) == (2, 2)
    assert inbox.recipients() == EVERYONE
    refused = Outbox.objects.filter(attempts=2)
    assert refused.count() == 2 and all(r.state == "sent" for r in refused)
