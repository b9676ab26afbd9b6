"""Receiving OpenAI's webhooks (services/webhooks.py): the Standard Webhooks signature checked
against the official SDK's verifier with its test vectors, and what an accepted or refused
delivery changes (the batch's schedule, the deliveries, the audit trail) and what it does not."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography.fernet import Fernet
from django.db import IntegrityError, transaction

from batches.models import (
    Batch,
    Connection,
    Event,
    WebhookDelivery,
    WebhookRefusals,
    default_connection,
)
from batches.services import webhooks as service
from batches.services.batches import batch_upsert
from batches.services.webhooks import (
    WebhookError,
    WebhookEventUnsupported,
    WebhookHeaderInvalid,
    WebhookHeaderMissing,
    WebhookNotConfigured,
    WebhookOtherConnection,
    WebhookPayloadInvalid,
    WebhookSignatureMismatch,
    WebhookTimestampOutOfRange,
    webhook_receive,
    webhook_verify,
)
from tests.conftest import make_batch
from tests.webhook_vectors import (
    NOW,
    NOW_DT,
    OTHER_SECRET,
    SECRET,
    WEBHOOK_ID,
    event_body,
    sdk_accepts,
    sdk_accepts_these,
    signature,
    signed_headers,
)

GATEWAY = "https://gateway.example.test/v1"
BODY = event_body()


def later(seconds: float) -> dt.datetime:
    return NOW_DT + dt.timedelta(seconds=seconds)


def our_verdict(body: bytes, headers: dict[str, str], *, secret: str = SECRET) -> str:
    """ "ok", or the name of the error our verifier raises."""
    try:
        webhook_verify(secret=secret, headers=headers, body=body, now=NOW_DT)
    except WebhookError as error:
        return type(error).__name__
    return "ok"


# --- The signature, case by case, against the SDK ---------------------------------------------

GOOD = signature(BODY)
OTHER_BODY = event_body("batch_other")


def _without(name: str) -> dict[str, str]:
    headers = signed_headers(BODY)
    del headers[name]
    return headers


CASES = {
    "good": (signed_headers(BODY), "ok"),
    "headers in any case": (
        {k.title(): v for k, v in signed_headers(BODY).items()},
        "ok",
    ),
    "signed for another body": (
        signed_headers(BODY, signatures=signature(OTHER_BODY)),
        "WebhookSignatureMismatch",
    ),
    "signed with another secret": (
        signed_headers(BODY, secret=OTHER_SECRET),
        "WebhookSignatureMismatch",
    ),
    "signed for another webhook-id": (
        signed_headers(BODY, signatures=signature(BODY, webhook_id="wh_other")),
        "WebhookSignatureMismatch",
    ),
    "signed for another timestamp": (
        signed_headers(BODY, signatures=signature(BODY, timestamp=NOW - 1)),
        "WebhookSignatureMismatch",
    ),
    "a garbage signature": (
        signed_headers(BODY, signatures="v1,bm90IGEgc2lnbmF0dXJl"),
        "WebhookSignatureMismatch",
    ),
    "missing webhook-id": (_without("webhook-id"), "WebhookHeaderMissing"),
    "missing webhook-timestamp": (_without("webhook-timestamp"), "WebhookHeaderMissing"),
    "missing webhook-signature": (_without("webhook-signature"), "WebhookHeaderMissing"),
    "no headers at all": ({}, "WebhookHeaderMissing"),
    "a timestamp that is not a number": (
        {**signed_headers(BODY), "webhook-timestamp": "yesterday"},
        "WebhookHeaderInvalid",
    ),
    "301 s old": (signed_headers(BODY, timestamp=NOW - 301), "WebhookTimestampOutOfRange"),
    "301 s ahead": (signed_headers(BODY, timestamp=NOW + 301), "WebhookTimestampOutOfRange"),
    "299 s old": (signed_headers(BODY, timestamp=NOW - 299), "ok"),
    "299 s ahead": (signed_headers(BODY, timestamp=NOW + 299), "ok"),
    "exactly 300 s old": (signed_headers(BODY, timestamp=NOW - 300), "ok"),
    "rotation: the second of two signatures matches": (
        signed_headers(BODY, signatures=f"{signature(BODY, secret=OTHER_SECRET)} {GOOD}"),
        "ok",
    ),
    "rotation: the first of two signatures matches": (
        signed_headers(BODY, signatures=f"{GOOD} {signature(BODY, secret=OTHER_SECRET)}"),
        "ok",
    ),
    "a v2 entry is ignored beside a good v1": (
        signed_headers(BODY, signatures=f"v2,{GOOD[3:]} {GOOD}"),
        "ok",
    ),
    "a v2 entry alone does not count, even with the right bytes": (
        signed_headers(BODY, signatures=f"v2,{GOOD[3:]}"),
        "WebhookSignatureMismatch",
    ),
    "rotation: neither of two signatures matches": (
        signed_headers(
            BODY,
            signatures=f"{signature(OTHER_BODY)} {signature(BODY, secret=OTHER_SECRET)}",
        ),
        "WebhookSignatureMismatch",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_our_verifier_agrees_with_the_openai_sdk(case):
    headers, expected = CASES[case]

    assert our_verdict(BODY, headers) == expected
    assert sdk_accepts(BODY, headers) == (expected == "ok")


def test_a_body_changed_after_signing_is_refused_by_both():
    headers = sdk_accepts_these(BODY, signed_headers(BODY))
    tampered = BODY.replace(b"batch_abc123", b"batch_abc124")

    assert our_verdict(tampered, headers) == "WebhookSignatureMismatch"
    assert not sdk_accepts(tampered, headers)


def test_a_signature_without_its_version_is_refused_though_the_sdk_takes_it():
    # A deliberate difference: the SDK treats an entry without "v1," as a bare signature; the
    # scheme says entries are "<version>,<signature>", so ours wants the v1 marker.
    headers = signed_headers(BODY, signatures=GOOD[3:])

    assert sdk_accepts(BODY, headers)
    assert our_verdict(BODY, headers) == "WebhookSignatureMismatch"


def test_the_verifier_returns_the_webhook_id():
    headers = sdk_accepts_these(BODY, signed_headers(BODY))

    assert webhook_verify(secret=SECRET, headers=headers, body=BODY, now=NOW_DT) == WEBHOOK_ID


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({**signed_headers(BODY), "webhook-id": "wh id with spaces"}, WebhookHeaderInvalid),
        ({**signed_headers(BODY), "webhook-id": "w" * 129}, WebhookHeaderInvalid),
        ({**signed_headers(BODY), "webhook-id": "wh_é"}, WebhookHeaderInvalid),
        ({**signed_headers(BODY), "webhook-timestamp": "1_750_000_000"}, WebhookHeaderInvalid),
        ({**signed_headers(BODY), "webhook-timestamp": "-1"}, WebhookHeaderInvalid),
        ({**signed_headers(BODY), "webhook-timestamp": "9" * 40}, WebhookHeaderInvalid),
        ({**signed_headers(BODY), "webhook-signature": "v1,x " * 2000}, WebhookHeaderInvalid),
        ({**signed_headers(BODY), "webhook-signature": "v1,é€"}, WebhookSignatureMismatch),
        ({**signed_headers(BODY), "webhook-id": ""}, WebhookHeaderMissing),
    ],
)
def test_junk_headers_are_refused_with_a_reason_never_an_exception_of_another_kind(headers, error):
    with pytest.raises(error) as raised:
        webhook_verify(secret=SECRET, headers=headers, body=BODY, now=NOW_DT)

    assert raised.value.reason
    assert SECRET not in raised.value.reason


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("", "no webhook secret is set"),
        ("c3ludGhldGljLXdlYmhvb2stc2VjcmV0", "does not start with whsec_"),
        ("whsec_not base64!", "not base64"),
        ("whsec_", "empty"),
    ],
)
def test_a_secret_that_cannot_verify_anything_says_why(secret, reason):
    with pytest.raises(WebhookNotConfigured, match=reason):
        webhook_verify(secret=secret, headers=signed_headers(BODY), body=BODY, now=NOW_DT)


def test_the_secret_is_the_base64_decoded_part_after_whsec():
    key = base64.b64decode(SECRET.removeprefix("whsec_"))

    assert key == b"synthetic-webhook-secret"
    assert our_verdict(BODY, signed_headers(BODY)) == "ok"


# --- Receiving: what changes -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def encryption_key(settings) -> None:
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()


@pytest.fixture
def research(db) -> Connection:
    connection = Connection(name="Research", slug="research", base_url=GATEWAY)
    connection.set_key("sk-research-key-1234")
    connection.set_webhook_secret(SECRET)
    connection.save()
    return connection


@pytest.fixture
def finance(db) -> Connection:
    connection = Connection(name="Finance", slug="finance", base_url=GATEWAY)
    connection.set_key("sk-finance-key-1234")
    connection.set_webhook_secret(OTHER_SECRET)
    connection.save()
    return connection


def cache(connection: Connection, batch_id: str, status: str = "in_progress") -> Batch:
    """A batch stored a moment before the delivery: next due a few seconds later."""
    payload = make_batch(id=batch_id, status=status)
    return batch_upsert(payload=payload, connection=connection, now=later(-1)).batch


def deliver(
    connection: Connection,
    body: bytes = BODY,
    *,
    webhook_id: str = WEBHOOK_ID,
    secret: str = SECRET,
    headers: dict[str, str] | None = None,
    now: dt.datetime = NOW_DT,
) -> service.WebhookOutcome:
    if headers is None:
        headers = sdk_accepts_these(
            body, signed_headers(body, webhook_id=webhook_id, secret=secret), secret=secret
        )
    return webhook_receive(connection=connection, headers=headers, body=body, now=now)


def snapshot() -> list[tuple]:
    return list(
        Batch.objects.order_by("pk").values_list(
            "pk", "connection_id", "openai_id", "status", "next_refresh_at", "synced_at"
        )
    )


def test_a_completed_running_batch_is_made_due_at_once(research):
    batch = cache(research, "batch_abc123")
    assert batch.next_refresh_at > NOW_DT  # the poll would come later

    outcome = deliver(research)

    assert outcome.accepted
    batch.refresh_from_db()
    assert batch.next_refresh_at == NOW_DT
    assert batch.status == "in_progress"  # the worker fetches it; nothing is guessed here
    delivery = WebhookDelivery.objects.get()
    assert (delivery.connection, delivery.webhook_id, delivery.accepted) == (
        research,
        WEBHOOK_ID,
        True,
    )
    assert (delivery.event_type, delivery.batch_openai_id) == ("batch.completed", "batch_abc123")
    assert delivery.detail == "cached as in_progress: refresh requested"


@pytest.mark.parametrize(
    "kind", ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]
)
def test_each_ending_is_accepted(research, kind):
    cache(research, "batch_abc123")

    outcome = deliver(research, event_body(kind=kind))

    assert outcome.accepted
    assert Batch.objects.get().next_refresh_at == NOW_DT


def test_an_accepted_delivery_is_in_the_audit_trail_with_its_batch(research):
    batch = cache(research, "batch_abc123")

    deliver(research)

    event = Event.objects.get()
    assert event.action == Event.Action.WEBHOOK
    assert not event.failed
    assert (event.batch, event.connection, event.batch_openai_id) == (
        batch,
        research,
        "batch_abc123",
    )
    assert event.target == f"webhook {WEBHOOK_ID}"
    assert "batch.completed" in event.detail


def test_a_batch_not_cached_yet_is_accepted_and_left_to_the_list_walk(research):
    outcome = deliver(research)

    assert outcome.accepted
    assert not Batch.objects.exists()  # nothing invented from a thin event
    assert WebhookDelivery.objects.get().detail == "not cached yet: the next list walk brings it"
    event = Event.objects.get()
    assert (event.batch, event.batch_openai_id, event.connection) == (
        None,
        "batch_abc123",
        research,
    )


def test_a_batch_cached_as_finished_already_is_accepted_and_left_alone(research):
    cache(research, "batch_abc123", status="completed")
    before = snapshot()

    outcome = deliver(research)

    assert outcome.accepted
    assert snapshot() == before
    assert WebhookDelivery.objects.get().detail == "cached as completed already: nothing to refresh"


def test_a_redelivered_webhook_id_is_accepted_again_and_changes_nothing_however_often(research):
    # OpenAI delivers again when it did not get our 200: answering it as accepted stops that.
    batch = cache(research, "batch_abc123")
    deliver(research)
    Batch.objects.filter(pk=batch.pk).update(next_refresh_at=later(60))  # the worker's lease
    before = snapshot()

    outcomes = [deliver(research, now=later(n)) for n in (1, 2)]

    assert all(o.accepted and o.duplicate for o in outcomes)
    assert snapshot() == before
    rows = list(WebhookDelivery.objects.order_by("id").values_list("accepted", "detail"))
    assert rows == [(True, "cached as in_progress: refresh requested")]
    assert list(Event.objects.values_list("action", flat=True)) == ["webhook"]


def test_the_database_refuses_a_second_delivery_with_the_same_id(research):
    # The guard when two deliveries of one id arrive at once: both may get past the checks,
    # only one row can be written.
    WebhookDelivery.objects.create(connection=research, webhook_id="wh_1", accepted=True)

    for accepted in (True, False):
        with pytest.raises(IntegrityError), transaction.atomic():
            WebhookDelivery.objects.create(
                connection=research, webhook_id="wh_1", accepted=accepted
            )


def test_a_delivery_that_loses_the_race_is_a_duplicate_and_changes_nothing(research, monkeypatch):
    batch = cache(research, "batch_abc123")
    before = snapshot()
    # Another process accepts this id between our first look and our write.
    real_filter = WebhookDelivery.objects.filter
    looks = []

    def racing(*args, **kwargs):
        looks.append(kwargs)
        if len(looks) > 1:
            return real_filter(*args, **kwargs)
        WebhookDelivery.objects.create(
            connection=research, webhook_id=WEBHOOK_ID, accepted=True, detail="theirs"
        )
        return real_filter(*args, **kwargs).none()  # the look came just before

    monkeypatch.setattr(WebhookDelivery.objects, "filter", racing, raising=False)
    outcome = deliver(research)

    assert outcome.accepted and outcome.duplicate
    assert outcome.delivery.detail == "theirs"
    assert snapshot() == before
    assert Batch.objects.get(pk=batch.pk).next_refresh_at != NOW_DT
    assert not Event.objects.exists()


def test_a_forged_delivery_does_not_block_the_genuine_one_with_the_same_id(research):
    cache(research, "batch_abc123")
    forged = signed_headers(BODY, secret=OTHER_SECRET)
    assert not deliver(research, headers=forged).accepted

    assert deliver(research).accepted
    assert WebhookDelivery.objects.get().accepted


def test_the_same_webhook_id_on_two_connections_is_two_deliveries(research, finance):
    cache(research, "batch_abc123")
    cache(finance, "batch_abc123")

    assert deliver(research).accepted
    assert deliver(finance, secret=OTHER_SECRET).accepted


def test_an_unknown_event_type_is_refused_and_changes_nothing(research):
    cache(research, "batch_abc123")
    before = snapshot()

    outcome = deliver(research, event_body(kind="response.completed"))

    assert isinstance(outcome.error, WebhookEventUnsupported)
    assert outcome.reason == "event type response.completed is not handled"
    assert snapshot() == before
    delivery = WebhookDelivery.objects.get()
    assert (delivery.accepted, delivery.event_type) == (False, "response.completed")
    assert Event.objects.get().action == Event.Action.WEBHOOK_REFUSED


def test_an_unknown_event_type_does_not_use_up_its_webhook_id(research):
    deliver(research, event_body(kind="batch.paused"))

    assert deliver(research).accepted
    assert WebhookDelivery.objects.get().accepted  # the refused row became the accepted one


def test_a_signed_refusal_delivered_again_is_recorded_once(research):
    body = event_body(kind="batch.paused")
    outcomes = [deliver(research, body, now=later(n)) for n in (0, 1, 2)]

    assert [isinstance(o.error, WebhookEventUnsupported) for o in outcomes] == [True] * 3
    assert [o.duplicate for o in outcomes] == [False, True, True]
    assert WebhookDelivery.objects.count() == 1
    assert Event.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json at all", "the body is not JSON"),
        (b'{"type": "batch.completed", "data": {"id": "batch_1"}', "the body is not JSON"),
        (b"\xff\xfe\x00junk", "the body is not UTF-8"),
        (b"[1, 2, 3]", "the body is not a JSON object"),
        (b"[" * 50_000 + b"]" * 50_000, "the body is not JSON"),
        (b'{"data": {"id": "batch_1"}}', "the event has no type"),
        (b'{"type": 7, "data": {"id": "batch_1"}}', "the event has no type"),
        (b'{"type": "batch.completed"}', "the event names no batch in data.id"),
        (b'{"type": "batch.completed", "data": {"id": 12}}', "the event names no batch"),
        (b'{"type": "batch.completed", "data": {"id": ""}}', "the event names no batch"),
        (b"", "the body is not JSON"),
    ],
)
def test_a_correctly_signed_body_that_is_not_an_event_is_refused(research, body, reason):
    cache(research, "batch_1")
    before = snapshot()
    headers = signed_headers(body)
    if body.startswith(b"\xff"):
        # The SDK cannot even verify a body that is not UTF-8 (it decodes it first).
        assert not sdk_accepts(body, headers)
    else:
        sdk_accepts_these(body, headers)

    outcome = deliver(research, body, headers=headers)

    assert isinstance(outcome.error, WebhookPayloadInvalid)
    assert reason in outcome.reason
    assert snapshot() == before
    assert not WebhookDelivery.objects.get().accepted


def test_a_batch_only_another_connection_has_is_refused_and_neither_is_touched(research, finance):
    theirs = cache(finance, "batch_abc123")
    before = snapshot()

    outcome = deliver(research)  # signed with research's secret

    assert isinstance(outcome.error, WebhookOtherConnection)
    assert snapshot() == before
    assert Batch.objects.get() == theirs
    delivery = WebhookDelivery.objects.get()
    assert (delivery.connection, delivery.accepted) == (research, False)
    event = Event.objects.get()
    # The entry is research's; finance's batch is not linked to it.
    assert (event.connection, event.batch, event.action) == (research, None, "webhook_refused")


def test_a_batch_both_connections_have_is_refreshed_for_the_one_addressed_only(research, finance):
    mine = cache(research, "batch_abc123")
    theirs = cache(finance, "batch_abc123")

    assert deliver(research).accepted

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.next_refresh_at == NOW_DT
    assert theirs.next_refresh_at != NOW_DT


def test_a_delivery_signed_with_another_connections_secret_is_refused(research, finance):
    cache(research, "batch_abc123")
    before = snapshot()

    outcome = deliver(research, secret=OTHER_SECRET)

    assert isinstance(outcome.error, WebhookSignatureMismatch)
    assert snapshot() == before


@pytest.mark.parametrize("seconds", [-301, 301])
def test_a_stale_or_future_delivery_is_refused_and_changes_nothing(research, seconds):
    cache(research, "batch_abc123")
    before = snapshot()
    headers = signed_headers(BODY, timestamp=NOW + seconds)

    outcome = deliver(research, headers=headers)

    assert isinstance(outcome.error, WebhookTimestampOutOfRange)
    assert snapshot() == before


@pytest.mark.parametrize("seconds", [-299, 299])
def test_a_delivery_just_inside_the_five_minutes_is_accepted(research, seconds):
    cache(research, "batch_abc123")
    headers = sdk_accepts_these(BODY, signed_headers(BODY, timestamp=NOW + seconds))

    assert deliver(research, headers=headers).accepted


def test_an_unverified_delivery_is_only_counted(research):
    cache(research, "batch_abc123")
    forged = signed_headers(BODY, secret=OTHER_SECRET)

    outcomes = [deliver(research, headers=forged, now=later(n)) for n in (0, 5)]

    assert [o.delivery for o in outcomes] == [None, None]
    # Nothing the request said is stored: no row of its own, no audit entry.
    assert not WebhookDelivery.objects.exists()
    assert not Event.objects.exists()
    counted = WebhookRefusals.objects.get()
    assert (counted.connection, counted.count, counted.last_at, counted.last_reason) == (
        research,
        2,
        later(5),
        "no signature matches",
    )


def test_nothing_stored_or_logged_holds_the_secret_or_a_signature(research, caplog):
    cache(research, "batch_abc123")
    good = signed_headers(BODY)
    caplog.set_level("DEBUG")

    deliver(research, headers=good)
    deliver(research, headers=good)  # replay
    deliver(research, headers=signed_headers(BODY, secret=OTHER_SECRET))
    deliver(research, headers={**good, "webhook-timestamp": str(NOW - 3600)})

    stored = " ".join(
        str(row)
        for model in (WebhookDelivery, Event, Connection)
        for row in model.objects.values_list()
    )
    secret_part = SECRET.removeprefix("whsec_")
    for text in (stored, caplog.text):
        assert secret_part not in text
        assert good["webhook-signature"][3:] not in text
        assert "synthetic-webhook-secret" not in text
    assert "refused" in caplog.text


# --- Connections that take no webhooks ---------------------------------------------------------


def test_a_disabled_connection_refuses_every_delivery(research):
    research.enabled = False
    research.save()

    outcome = deliver(research)

    assert isinstance(outcome.error, WebhookNotConfigured)
    assert WebhookRefusals.objects.get().last_reason == "the connection is disabled"
    assert not WebhookDelivery.objects.exists() and not Event.objects.exists()


def test_a_connection_without_a_secret_refuses_every_delivery(research):
    research.set_webhook_secret("")
    research.save()

    outcome = deliver(research)

    assert isinstance(outcome.error, WebhookNotConfigured)
    refusals = WebhookRefusals.objects.get()
    assert refusals.last_reason == "no webhook secret is set for this connection"
    assert not WebhookDelivery.objects.exists() and not Event.objects.exists()


def test_a_secret_that_cannot_be_decrypted_refuses_deliveries_without_an_error(research, settings):
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()  # the key was changed

    outcome = deliver(research)

    assert isinstance(outcome.error, WebhookNotConfigured)
    assert "cannot be decrypted" in outcome.reason


def test_the_first_connection_reads_openai_webhook_secret(db, settings):
    settings.OPENAI_WEBHOOK_SECRET = SECRET
    connection = default_connection()
    cache(connection, "batch_abc123")

    assert deliver(connection).accepted
    assert Batch.objects.get().next_refresh_at == NOW_DT


def test_a_secret_stored_on_the_first_connection_wins_over_the_environment(db, settings):
    settings.OPENAI_WEBHOOK_SECRET = OTHER_SECRET
    connection = default_connection()
    connection.set_webhook_secret(SECRET)
    connection.save()

    assert deliver(connection).accepted
    assert not deliver(connection, secret=OTHER_SECRET, webhook_id="wh_2").accepted


def test_the_first_connection_without_openai_webhook_secret_refuses(db, settings):
    settings.OPENAI_WEBHOOK_SECRET = ""

    outcome = deliver(default_connection())

    assert isinstance(outcome.error, WebhookNotConfigured)


def test_a_body_over_the_limit_is_refused_before_it_is_verified(research):
    body = b" " * (service.MAX_BODY_BYTES + 1)

    outcome = deliver(research, body, headers=signed_headers(body))

    assert isinstance(outcome.error, service.WebhookBodyTooLarge)
