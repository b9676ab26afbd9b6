"""Notifications: who is told when a batch ends (the outbox rows `batch_upsert` writes), what the
messages say, and how the worker delivers them (email through Django's locmem backend here,
webhooks through `responses`; a real SMTP server is in test_notifications_smtp.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import os
import signal
import time

import pytest
import requests
import responses
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from responses import matchers

from batches.management.commands import sync_batches as command_module
from batches.models import (
    Batch,
    Channel,
    Connection,
    Event,
    NotificationPreference,
    Outbox,
    SyncState,
    Watch,
    default_connection,
)
from batches.services import connections as connection_services
from batches.services import notifications
from batches.services.batches import batch_upsert
from batches.services.notifications import (
    SETTINGS_CHANNEL_NAME,
    delivery,
    messages,
    notifications_deliver,
    notifications_enqueue,
    outbox_claim_due,
    webhook_signature,
)
from batches.services.sync import list_walk
from tests.conftest import make_batch, make_list

pytestmark = pytest.mark.django_db

API = settings.OPENAI_BASE_URL
HOOK = "https://hooks.example.test/services/T000/B000/secret-path-XYZ"
JSON_HOOK = "https://receiver.example.test/batchweb?token=also-secret"
META = {"job": "nightly-eval", "batchweb_user": "sam"}
CREATED = 1764000000
ENDED = CREATED + 2 * 3600 + 14 * 60  # 2 h 14 min later
STAMP = {
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelled": "cancelled_at",
}


@pytest.fixture(autouse=True)
def base_url(settings):
    settings.BATCHWEB_BASE_URL = "https://batchweb.example.test"
    settings.BATCHWEB_NOTIFY_WEBHOOK_URL = ""
    settings.BATCHWEB_NOTIFY_WEBHOOK_SECRET = ""
    settings.NOTIFY_MAX_ATTEMPTS = 4
    settings.NOTIFY_BACKOFF_MIN_SECONDS = 30.0
    settings.NOTIFY_BACKOFF_MAX_SECONDS = 100.0
    settings.NOTIFY_LEASE_SECONDS = 60.0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def encryption_key(settings) -> str:
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()
    return settings.BATCHWEB_ENCRYPTION_KEY


@pytest.fixture
def now() -> dt.datetime:
    """A moment just after the test's rows were written (they are due from their creation)."""
    return (timezone.now() + dt.timedelta(seconds=10)).replace(microsecond=0)


def start(batch_id: str = "batch_n1", *, connection: Connection | None = None, **extra) -> Batch:
    """A running batch in the cache, created by sam (through batchweb: metadata names him)."""
    payload = make_batch(
        id=batch_id,
        status="in_progress",
        metadata=extra.pop("metadata", META),
        created_at=CREATED,
        **extra,
    )
    return batch_upsert(payload=payload, connection=connection).batch


def finish(
    status: str = "completed",
    batch_id: str = "batch_n1",
    *,
    connection: Connection | None = None,
    counts: tuple[int, int, int] = (100, 97, 3),
    **extra,
) -> Batch:
    total, completed, failed = counts
    payload = make_batch(
        id=batch_id,
        status=status,
        created_at=CREATED,
        request_counts={"total": total, "completed": completed, "failed": failed},
        metadata=extra.pop("metadata", META),
        **{STAMP[status]: ENDED},
        **extra,
    )
    return batch_upsert(payload=payload, connection=connection).batch


def emails() -> dict[str, Outbox]:
    return {row.recipient: row for row in Outbox.objects.filter(channel=Outbox.Channel.EMAIL)}


def webhooks() -> list[Outbox]:
    return list(Outbox.objects.filter(channel=Outbox.Channel.WEBHOOK).order_by("id"))


def watch(user: User, batch: Batch) -> None:
    Watch.objects.create(user=user, batch=batch)


def channel(name: str, url: str = HOOK, *, kind=Channel.Kind.SLACK, secret="", **fields) -> Channel:
    made = Channel(name=name, kind=kind, **fields)
    made.set_url(url)
    made.set_secret(secret)
    made.save()
    return made


# --- Who is told ------------------------------------------------------------------------------


def test_the_creator_is_told_when_their_batch_ends(submitter):
    start()

    batch = finish()

    rows = emails()
    assert list(rows) == ["sam@example.com"]
    row = rows["sam@example.com"]
    assert row.user == submitter and row.batch == batch
    assert row.key == f"{batch.pk}:completed:email:sam@example.com"
    assert (row.state, row.event, row.attempts) == ("pending", "completed", 0)


def test_watchers_are_told_and_a_creator_who_watches_gets_one_email(submitter, viewer):
    batch = start()
    watch(viewer, batch)
    watch(submitter, batch)

    finish()

    rows = emails()
    assert sorted(rows) == ["sam@example.com", "vic@example.com"]
    assert "because you created this batch" in rows["sam@example.com"].body
    assert "because you watch this batch" in rows["vic@example.com"].body


def test_a_creator_who_only_wants_watched_batches_is_told_when_they_watch_their_own(submitter):
    batch = start()
    watch(submitter, batch)
    NotificationPreference.objects.create(user=submitter, my_batches=False)

    finish()

    assert "because you watch this batch" in emails()["sam@example.com"].body


def test_two_people_sharing_an_address_get_one_email(submitter, viewer):
    batch = start()
    watch(viewer, batch)
    User.objects.filter(pk=viewer.pk).update(email="SAM@example.com")

    finish()

    assert Outbox.objects.count() == 1


def test_nobody_is_told_who_turned_it_off(submitter, viewer):
    batch = start()
    watch(viewer, batch)
    NotificationPreference.objects.create(user=submitter, my_batches=False)
    NotificationPreference.objects.create(user=viewer, watched=False)

    finish()

    assert emails() == {}


def test_a_person_without_a_usable_email_address_gets_no_row(submitter, viewer):
    batch = start()
    watch(viewer, batch)
    User.objects.filter(pk=submitter.pk).update(email="")
    User.objects.filter(pk=viewer.pk).update(email="not an address")

    finish()

    assert emails() == {}


def test_someone_who_may_no_longer_read_batches_is_not_told(submitter, viewer):
    batch = start()
    watch(viewer, batch)
    User.objects.filter(pk=submitter.pk).update(is_active=False)
    viewer.groups.clear()

    finish()

    assert emails() == {}


def test_people_outside_a_restricted_connection_are_never_told(research, viewer):
    insider = User.objects.create_user("rita", "rita@example.com", "pw-rita-123")
    insider.groups.add(Group.objects.get(name="Viewers"), Group.objects.get(name="Research"))
    batch = start("batch_secret", connection=research, metadata={"job": "classified"})
    watch(viewer, batch)  # pressed before the connection was restricted, say
    watch(insider, batch)

    finish(batch_id="batch_secret", connection=research, metadata={"job": "classified"})

    assert list(emails()) == ["rita@example.com"]


def test_each_enabled_channel_of_the_batch_s_connection_gets_one_row(encryption_key, research):
    everyone = channel("Everything")
    mine = channel("Default only")
    mine.connections.add(default_connection())
    other = channel("Research only")
    other.connections.add(research)
    channel("Switched off", enabled=False)
    start()

    batch = finish()

    rows = webhooks()
    assert sorted(int(r.recipient) for r in rows) == sorted([everyone.pk, mine.pk])
    assert {r.key for r in rows} == {
        f"{batch.pk}:completed:channel:{everyone.pk}",
        f"{batch.pk}:completed:channel:{mine.pk}",
    }
    assert other.pk not in [int(r.recipient) for r in rows]


def test_a_batch_first_seen_finished_tells_nobody(encryption_key, submitter, upstream):
    channel("Everything")
    batch_upsert(payload=make_batch(id="batch_old", status="completed", metadata=META))
    upstream.get(
        f"{API}/batches",
        json=make_list(
            [make_batch(id=f"batch_old{i}", status="failed", metadata=META) for i in range(3)]
        ),
    )
    list_walk(connection=default_connection(), client=connection_services.get_client(), full=True)

    assert Batch.objects.count() == 4
    assert Outbox.objects.count() == 0


def test_a_change_that_is_not_an_ending_tells_nobody(submitter):
    start()
    batch_upsert(
        payload=make_batch(id="batch_n1", status="finalizing", metadata=META, created_at=CREATED)
    )
    batch_upsert(
        payload=make_batch(id="batch_n1", status="cancelling", metadata=META, created_at=CREATED)
    )

    assert Outbox.objects.count() == 0


def test_the_same_ending_stored_twice_makes_exactly_one_row_each(encryption_key, submitter):
    channel("Everything")
    start()

    batch = finish()
    finish(counts=(100, 98, 2))  # the same ending, counts settled a little later
    notifications_enqueue(batch=batch, before_status="in_progress")  # another worker, racing

    assert Outbox.objects.count() == 2
    assert list(emails()) == ["sam@example.com"]


@pytest.mark.parametrize("status", ["failed", "expired", "cancelled"])
def test_every_ending_is_news(submitter, status):
    start()

    finish(status)

    assert emails()["sam@example.com"].event == status


def test_nothing_is_queued_for_a_batch_that_has_not_ended(submitter):
    batch = start()

    assert notifications_enqueue(batch=batch, before_status="validating") == 0
    assert notifications_enqueue(batch=finish(), before_status=None) == 0
    assert notifications_enqueue(batch=batch, before_status="completed") == 0


def test_the_settings_webhook_becomes_a_channel_that_stores_no_secret(settings):
    settings.BATCHWEB_NOTIFY_WEBHOOK_URL = HOOK
    start()

    finish()

    made = Channel.objects.get(from_settings=True)
    assert (made.name, made.kind, made.url_host) == (
        SETTINGS_CHANNEL_NAME,
        Channel.Kind.SLACK,
        "hooks.example.test",
    )
    assert made.url_encrypted == "" and made.secret_encrypted == ""
    assert made.url() == HOOK
    assert [r.recipient for r in webhooks()] == [str(made.pk)]
    assert "text" in json.loads(webhooks()[0].body)


def test_the_settings_webhook_with_a_secret_sends_the_signed_json_body(settings):
    settings.BATCHWEB_NOTIFY_WEBHOOK_URL = JSON_HOOK
    settings.BATCHWEB_NOTIFY_WEBHOOK_SECRET = "shh"
    start()

    finish()

    assert Channel.objects.get(from_settings=True).kind == Channel.Kind.JSON
    assert json.loads(webhooks()[0].body)["type"] == "batch.completed"


def test_an_admin_can_switch_the_settings_channel_off(settings):
    settings.BATCHWEB_NOTIFY_WEBHOOK_URL = HOOK
    start("batch_a")
    finish(batch_id="batch_a")
    Channel.objects.filter(from_settings=True).update(enabled=False)
    start("batch_b")

    finish(batch_id="batch_b")

    assert len(webhooks()) == 1


# --- What the messages say --------------------------------------------------------------------


def test_the_email_says_what_happened_in_words(submitter):
    start()

    finish()

    row = emails()["sam@example.com"]
    assert row.subject == "Batch nightly-eval completed with 3 failures (OpenAI)"
    body = row.body
    assert body.startswith("Batch nightly-eval completed with 3 failures.\n")
    assert "Batch:      batch_n1" in body
    assert "Connection: OpenAI" in body
    assert "Status:     completed with failures" in body
    assert "Requests:   97 succeeded, 3 failed, 100 in all" in body
    assert "Duration:   2 h 14 min" in body
    assert "Ended:      2025-11-24 18:14 UTC" in body
    assert "Created by: sam" in body
    # 1,200 input and 800 output tokens of gpt-4o-mini at its batch rates ($0.075, $0.30 per
    # million); an unknown cost is said nowhere (tests/test_costs.py)
    assert "Cost:       $0.00033 estimated (saved $0.00033 against list price)" in body
    assert "Open it: https://batchweb.example.test/connections/default/batches/batch_n1/" in body
    assert "https://batchweb.example.test/profile/" in body


@pytest.mark.parametrize(
    ("status", "counts", "subject"),
    [
        ("completed", (100, 100, 0), "Batch nightly-eval completed (OpenAI)"),
        ("completed", (100, 99, 1), "Batch nightly-eval completed with 1 failure (OpenAI)"),
        (
            "completed",
            (100, 0, 100),
            "Batch nightly-eval completed, but all 100 requests failed (OpenAI)",
        ),
        ("failed", (0, 0, 0), "Batch nightly-eval failed (OpenAI)"),
        ("expired", (100, 60, 0), "Batch nightly-eval expired (OpenAI)"),
        ("cancelled", (100, 10, 0), "Batch nightly-eval was cancelled (OpenAI)"),
    ],
)
def test_each_ending_has_its_own_words(submitter, status, counts, subject):
    start()

    finish(status, counts=counts)

    assert emails()["sam@example.com"].subject == subject


def test_an_unlabelled_batch_is_named_by_its_id_and_upstream_errors_are_quoted(submitter):
    start(metadata={"batchweb_user": "sam"})
    errors = {
        "object": "list",
        "data": [{"code": "invalid_json", "line": 3, "message": "Line 3 is not JSON."}],
    }

    finish("failed", metadata={"batchweb_user": "sam"}, counts=(0, 0, 0), errors=errors)

    row = emails()["sam@example.com"]
    assert row.subject == "Batch batch_n1 failed (OpenAI)"
    assert "Upstream said:\n- Line 3 is not JSON." in row.body


def test_a_cost_is_said_once_batchweb_knows_it(submitter, monkeypatch, encryption_key):
    monkeypatch.setattr(messages, "batch_cost_text", lambda batch: "$4.20")
    channel("Slack")
    channel("JSON", JSON_HOOK, kind=Channel.Kind.JSON, secret="shh")
    start()

    finish()

    assert "Cost:       $4.20" in emails()["sam@example.com"].body
    plain, slack = sorted((json.loads(r.body) for r in webhooks()), key=lambda b: "text" in b)
    assert "cost $4.20" in slack["text"]
    assert plain["batch"]["cost"] == "$4.20"


def test_hostile_labels_are_cut_short_on_one_line_and_never_escaped_into_html(
    submitter, encryption_key
):
    channel("Slack")
    # (No NUL: PostgreSQL cannot store one in the cached batch itself.)
    label = "<b>Q&A</b> <!channel>\x07\x1b[31m\r\nBcc: evil@example.com\u202e" + "x" * 5000
    start(metadata={**META, "job": label})

    finish(metadata={**META, "job": label})

    row = emails()["sam@example.com"]
    assert "\n" not in row.subject and "\r" not in row.subject and "\x1b" not in row.subject
    assert len(row.subject) <= 255
    assert row.subject.startswith("Batch <b>Q&A</b> <!channel> [31m Bcc: evil@example.com xxx")
    assert "…" in row.subject
    assert "Label:      <b>Q&A</b> <!channel>" in row.body  # plain text: nothing escaped
    assert "&lt;" not in row.body and "\x07" not in row.body and "\u202e" not in row.body
    assert max(len(line) for line in row.body.splitlines()) < 300
    text = json.loads(webhooks()[0].body)["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text  # Slack would ping everyone
    assert "&lt;b&gt;Q&amp;A&lt;/b&gt;" in text


def test_the_slack_body_links_to_the_batch_in_slack_s_form(submitter, encryption_key):
    channel("Slack")
    start()

    finish()

    body = json.loads(webhooks()[0].body)
    assert list(body) == ["text"]
    lines = body["text"].splitlines()
    assert lines[0] == "*Batch nightly-eval completed with 3 failures* (OpenAI)"
    assert lines[1] == (
        "97 succeeded, 3 failed, 100 in all · took 2 h 14 min · ended 2025-11-24 18:14 UTC"
        " · cost $0.00033 estimated (saved $0.00033 against list price)"
    )
    assert lines[-1] == (
        "<https://batchweb.example.test/connections/default/batches/batch_n1/"
        "|Open batch_n1 in batchweb>"
    )


def test_the_json_body_describes_the_batch(submitter, encryption_key):
    channel("JSON", JSON_HOOK, kind=Channel.Kind.JSON, secret="shh")
    start()

    finish()

    body = json.loads(webhooks()[0].body)
    assert body["type"] == "batch.completed"
    assert body["summary"] == "Batch nightly-eval completed with 3 failures (OpenAI)"
    assert body["batch"] == {
        "id": "batch_n1",
        "connection": "default",
        "connection_name": "OpenAI",
        "status": "completed",
        "display_status": "completed with failures",
        "label": "nightly-eval",
        "request_counts": {"total": 100, "completed": 97, "failed": 3},
        "created_at": "2025-11-24T16:00:00+00:00",
        "ended_at": "2025-11-24T18:14:00+00:00",
        "url": "https://batchweb.example.test/connections/default/batches/batch_n1/",
        "cost": "$0.00033 estimated (saved $0.00033 against list price)",
    }


# --- Delivering: email ------------------------------------------------------------------------


def test_each_email_is_sent_once_and_marked_sent(submitter, viewer, now):
    batch = start()
    watch(viewer, batch)
    finish()

    first = notifications_deliver(now=now)
    second = notifications_deliver(now=now)

    assert (first.claimed, first.sent, second.claimed) == (2, 2, 0)
    assert sorted(m.to[0] for m in mail.outbox) == ["sam@example.com", "vic@example.com"]
    sent = mail.outbox[0]
    assert sent.subject == "Batch nightly-eval completed with 3 failures (OpenAI)"
    assert sent.from_email == settings.DEFAULT_FROM_EMAIL
    assert sent.extra_headers["Auto-Submitted"] == "auto-generated"
    for row in Outbox.objects.all():
        assert (row.state, row.attempts, row.sent_at, row.lease_until) == ("sent", 1, now, None)


def test_a_row_under_another_worker_s_lease_is_left_alone_until_the_lease_runs_out(submitter, now):
    start()
    finish()
    # A worker claims the row and dies before sending (or while it sends).
    claimed = outbox_claim_due(now=now, until=now + dt.timedelta(seconds=60), limit=50)
    assert len(claimed) == 1

    meanwhile = notifications_deliver(now=now + dt.timedelta(seconds=30))
    assert (meanwhile.claimed, len(mail.outbox)) == (0, 0)

    later = notifications_deliver(now=now + dt.timedelta(seconds=61))

    assert (later.sent, len(mail.outbox)) == (1, 1)
    assert Outbox.objects.get().state == "sent"


def test_a_claim_that_runs_past_half_its_lease_gives_the_rest_back(
    submitter, viewer, now, monkeypatch
):
    batch = start()
    watch(viewer, batch)
    finish()
    ticks = iter([0.0, 0.0, 31.0])
    monkeypatch.setattr(delivery, "_monotonic", lambda: next(ticks, 99.0))

    result = notifications_deliver(now=now)

    assert (result.claimed, result.sent, result.released) == (2, 1, 1)
    waiting = Outbox.objects.get(state="pending")
    assert waiting.lease_until is None and waiting.attempts == 0


def test_a_round_asked_to_stop_gives_back_what_it_has_not_sent(submitter, viewer, now):
    batch = start()
    watch(viewer, batch)
    finish()
    answers = iter([False, True])

    result = notifications_deliver(now=now, stop=lambda: next(answers))

    assert (result.claimed, result.sent, result.released) == (2, 1, 1)
    assert notifications_deliver(now=now).sent == 1
    assert len(mail.outbox) == 2


# --- Delivering: webhooks ---------------------------------------------------------------------


def test_the_slack_channel_receives_its_text(no_network, encryption_key, now):
    slack = channel("Team")
    start()
    finish()
    expected = json.loads(webhooks()[0].body)
    no_network.post(HOOK, status=200, body="ok", match=[matchers.json_params_matcher(expected)])

    result = notifications_deliver(now=now)

    assert result.sent == 1
    request = no_network.calls[0].request
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "X-Batchweb-Signature" not in request.headers  # no secret, no signature
    assert Outbox.objects.get(recipient=str(slack.pk)).state == "sent"


def test_the_json_channel_gets_a_body_signed_with_its_secret(no_network, encryption_key, now):
    channel("Receiver", JSON_HOOK, kind=Channel.Kind.JSON, secret="s3cret-for-hmac")
    start()
    finish()
    no_network.post(JSON_HOOK, status=204)

    notifications_deliver(now=now)

    request = no_network.calls[0].request
    raw = request.body
    expected = hmac.new(b"s3cret-for-hmac", raw, hashlib.sha256).hexdigest()
    assert request.headers["X-Batchweb-Signature"] == f"sha256={expected}"
    assert webhook_signature(secret="s3cret-for-hmac", body=raw) == f"sha256={expected}"
    assert request.headers["X-Batchweb-Timestamp"] == str(int(now.timestamp()))
    body = json.loads(raw)
    row = Outbox.objects.get()
    assert body["id"] == f"ntf_{row.pk}" == request.headers["X-Batchweb-Delivery"]
    assert body["sent_at"] == now.isoformat()
    assert body["type"] == "batch.completed" and body["batch"]["id"] == "batch_n1"
    assert row.state == "sent"


def test_a_failing_receiver_is_retried_with_doubling_waits_then_given_up_and_audited(
    no_network, encryption_key, now, caplog
):
    team = channel("Team")
    start()
    batch = finish()
    no_network.post(HOOK, status=500, body="no_service")
    waits = []
    when = now
    for _ in range(3):
        result = notifications_deliver(now=when)
        assert result.retrying == 1
        row = Outbox.objects.get()
        waits.append((row.next_attempt_at - when).total_seconds())
        assert notifications_deliver(now=row.next_attempt_at - dt.timedelta(seconds=1)).claimed == 0
        when = row.next_attempt_at

    last = notifications_deliver(now=when)

    assert waits == [30.0, 60.0, 100.0]  # doubling from the first wait, up to the last
    assert last.dead == 1
    row = Outbox.objects.get()
    assert (row.state, row.attempts) == ("dead", 4)
    assert row.last_error == "hooks.example.test answered HTTP 500: no_service"
    assert notifications_deliver(now=when + dt.timedelta(days=1)).claimed == 0
    event = Event.objects.get(action=Event.Action.NOTIFY_FAILED)
    assert event.failed and event.batch == batch and event.connection == batch.connection
    assert event.target == f"team channel to channel “{team.name}” (hooks.example.test)"
    assert "gave up after 4 attempts" in event.detail
    everything = " ".join([row.last_error, event.detail, event.target, caplog.text])
    assert "secret-path" not in everything and "T000" not in everything


def test_an_unreachable_receiver_is_described_without_its_url(no_network, encryption_key, now):
    channel("Receiver", JSON_HOOK, kind=Channel.Kind.JSON, secret="shh")
    start()
    finish()
    no_network.post(JSON_HOOK, body=requests.ConnectionError(f"Max retries with url: {JSON_HOOK}"))

    notifications_deliver(now=now)

    row = Outbox.objects.get()
    assert row.state == "pending" and row.attempts == 1
    assert row.last_error == "Could not connect to the receiver (receiver.example.test)."


def test_a_receiver_that_recovers_gets_the_message(no_network, encryption_key, now):
    channel("Team")
    start()
    finish()
    no_network.post(HOOK, status=503)
    notifications_deliver(now=now)
    no_network.replace(responses.POST, HOOK, status=200)

    notifications_deliver(now=now + dt.timedelta(seconds=30))

    row = Outbox.objects.get()
    assert (row.state, row.attempts, row.last_error) == ("sent", 2, "")


def test_a_deleted_channel_is_given_up_at_once(encryption_key, now):
    team = channel("Team")
    start()
    finish()
    team.delete()

    result = notifications_deliver(now=now)

    assert result.dead == 1
    assert Outbox.objects.get().last_error == "The channel was deleted."


def test_the_settings_channel_reads_its_url_from_the_settings(no_network, settings, now):
    settings.BATCHWEB_NOTIFY_WEBHOOK_URL = HOOK
    start()
    finish()
    no_network.post(HOOK, status=200)

    assert notifications_deliver(now=now).sent == 1


# --- The worker -------------------------------------------------------------------------------


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("sync_batches", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def synced_recently(db):
    SyncState.get(default_connection())
    SyncState.objects.filter(connection=default_connection()).update(
        last_full_sync_at=timezone.now()
    )


def test_the_worker_sends_what_a_pass_brought(upstream, submitter, synced_recently):
    start()
    Batch.objects.update(next_refresh_at=timezone.now() - dt.timedelta(seconds=1))
    ended = make_batch(
        id="batch_n1",
        status="completed",
        metadata=META,
        created_at=CREATED,
        completed_at=ENDED,
        request_counts={"total": 100, "completed": 100, "failed": 0},
    )
    upstream.get(f"{API}/batches", json=make_list([ended]))
    upstream.get(f"{API}/batches/batch_n1", json=ended)

    out, err = run("--loop", "--max-passes", "1", "--interval", "0")

    assert "notifications: 1 sent, 0 to retry, 0 given up of 1 claimed" in out
    assert [m.subject for m in mail.outbox] == ["Batch nightly-eval completed (OpenAI)"]
    assert err == ""


def test_a_failure_in_the_notifications_never_stops_the_sync(
    upstream, monkeypatch, synced_recently
):
    def broken(**kwargs):
        raise RuntimeError("a bug in a sender")

    monkeypatch.setattr(notifications, "notifications_deliver", broken)
    upstream.get(f"{API}/batches", json=make_list([]))

    out, err = run("--loop", "--max-passes", "2", "--interval", "0")

    assert out.count("sync default: ") == 2
    assert "notifications failed: unexpected error" in err


def test_a_single_sync_sends_the_notifications_too(upstream, submitter):
    start()
    Batch.objects.update(next_refresh_at=timezone.now())
    ended = make_batch(
        id="batch_n1", status="expired", metadata=META, created_at=CREATED, expired_at=ENDED
    )
    upstream.get(f"{API}/batches", json=make_list([ended]))
    upstream.get(f"{API}/batches/batch_n1", json=ended)

    out, _ = run()

    assert [m.subject for m in mail.outbox] == ["Batch nightly-eval expired (OpenAI)"]
    assert "notifications: 1 sent" in out


def test_a_worker_supervising_connection_threads_sends_every_few_seconds(monkeypatch):
    calls = []

    def deliver(**kwargs):
        calls.append(kwargs)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what stopping the worker sends
        return notifications.DeliveryResult()

    monkeypatch.setattr(notifications, "notifications_deliver", deliver)
    monkeypatch.setattr(command_module.Command, "roster", lambda self: [])
    monkeypatch.setattr(command_module, "NOTIFY_EVERY_SECONDS", 0.01)
    saved = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()

    out, _ = run("--loop")

    assert len(calls) == 3 and time.monotonic() - started < 5
    assert all(call["stop"]() for call in calls)  # a SIGTERM also ends a round early
    assert out.rstrip().endswith("Sync worker stopped.")
    assert signal.getsignal(signal.SIGTERM) == saved
