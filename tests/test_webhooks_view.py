"""`POST /webhooks/openai/<slug>/`: the one URL without a sign-in. Status codes for every kind
of refusal, JSON answers that never hold the secret, no 500 for junk, and a delivery followed
by one worker pass that brings the finished batch."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from batches.cache import generations as generation
from batches.models import (
    Batch,
    Connection,
    Event,
    SyncState,
    WebhookDelivery,
    WebhookRefusals,
    default_connection,
)
from batches.services import webhooks as service
from batches.services.batches import batch_upsert
from batches.services.sync import sync_pass
from tests.conftest import make_batch, make_list
from tests.webhook_vectors import (
    NOW,
    NOW_DT,
    OTHER_SECRET,
    SECRET,
    WEBHOOK_ID,
    event_body,
    sdk_accepts,
    sdk_accepts_these,
    signed_headers,
)

GATEWAY = "https://gateway.example.test/v1"
BODY = event_body()
NOT_HERE = {"error": "no webhook endpoint here"}


def url(slug: str = "research") -> str:
    return reverse("openai-webhook", args=[slug])


@pytest.fixture(autouse=True)
def encryption_key(settings) -> None:
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()


@pytest.fixture
def clock(monkeypatch) -> SimpleNamespace:
    """The receiving side's clock, pinned to the SDK vectors' NOW (movable)."""
    state = SimpleNamespace(now=NOW_DT)
    monkeypatch.setattr(service, "timezone", SimpleNamespace(now=lambda: state.now))
    return state


@pytest.fixture
def client() -> Client:
    # As OpenAI posts: no session, no CSRF token, and CSRF checks on.
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def research(db) -> Connection:
    connection = Connection(name="Research", slug="research", base_url=GATEWAY)
    connection.set_key("sk-research-key-1234")
    connection.set_webhook_secret(SECRET)
    connection.save()
    return connection


def cache(connection: Connection, batch_id: str = "batch_abc123", **overrides) -> Batch:
    payload = make_batch(id=batch_id, **overrides)
    return batch_upsert(payload=payload, connection=connection, now=NOW_DT).batch


def post(client: Client, body: bytes = BODY, *, slug: str = "research", headers=None, **extra):
    if headers is None:
        headers = sdk_accepts_these(body, signed_headers(body))
    return client.post(
        url(slug), data=body, content_type="application/json", headers=headers, **extra
    )


# --- Accepted ----------------------------------------------------------------------------------


def test_a_good_delivery_is_answered_200_and_makes_the_batch_due(client, clock, research):
    batch = cache(research)
    assert batch.next_refresh_at > NOW_DT

    response = post(client)

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response["Content-Type"] == "application/json"
    batch.refresh_from_db()
    assert batch.next_refresh_at == NOW_DT
    assert WebhookDelivery.objects.get().accepted


def test_the_view_and_the_sdk_agree_on_rotated_signatures(client, clock, research):
    cache(research)
    good = signed_headers(BODY)["webhook-signature"]
    old = signed_headers(BODY, secret=OTHER_SECRET)["webhook-signature"]
    headers = {**signed_headers(BODY), "webhook-signature": f"{old} v2,{good[3:]} {good}"}

    assert sdk_accepts(BODY, headers)
    assert post(client, headers=headers).status_code == 200


def test_no_sign_in_and_no_csrf_token_are_needed_but_a_session_does_not_hurt(
    client, clock, research, admin_user
):
    client.force_login(admin_user)

    assert post(client).status_code == 200


# --- Refused, with the status code of each reason ---------------------------------------------


def _without(name: str) -> dict[str, str]:
    headers = signed_headers(BODY)
    del headers[name]
    return headers


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        (signed_headers(BODY, secret=OTHER_SECRET), 401, "no signature matches"),
        (_without("webhook-id"), 400, "missing header webhook-id"),
        (_without("webhook-timestamp"), 400, "missing header webhook-timestamp"),
        (_without("webhook-signature"), 400, "missing header webhook-signature"),
        ({}, 400, "missing header webhook-id, webhook-timestamp, webhook-signature"),
        (
            {**signed_headers(BODY), "webhook-timestamp": "soon"},
            400,
            "webhook-timestamp is not unix seconds",
        ),
        (
            signed_headers(BODY, timestamp=NOW - 301),
            401,
            "the timestamp is more than 5 minutes old",
        ),
        (
            signed_headers(BODY, timestamp=NOW + 301),
            401,
            "the timestamp is more than 5 minutes ahead",
        ),
    ],
)
def test_a_refused_signature_gets_a_4xx_with_the_reason(
    client, clock, research, headers, status, error
):
    batch = cache(research)
    assert not sdk_accepts(BODY, headers)  # the SDK refuses these too

    response = post(client, headers=headers)

    assert response.status_code == status
    assert response.json() == {"error": error}
    batch.refresh_from_db()
    assert batch.next_refresh_at != NOW_DT
    assert not WebhookDelivery.objects.exists() and not Event.objects.exists()
    assert WebhookRefusals.objects.get().last_reason == error


@pytest.mark.parametrize("seconds", [-299, 299])
def test_just_inside_five_minutes_is_accepted(client, clock, research, seconds):
    headers = sdk_accepts_these(BODY, signed_headers(BODY, timestamp=NOW + seconds))

    assert post(client, headers=headers).status_code == 200


def test_a_redelivery_after_a_lost_200_gets_200_and_changes_nothing(client, clock, research):
    batch = cache(research)
    assert post(client).status_code == 200
    Batch.objects.filter(pk=batch.pk).update(next_refresh_at=NOW_DT + dt.timedelta(seconds=60))
    clock.now = NOW_DT + dt.timedelta(seconds=30)

    responses = [post(client) for _ in range(2)]

    # 200, or OpenAI would keep delivering it; nothing is done again.
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].json() == {"ok": True}
    batch.refresh_from_db()
    assert batch.next_refresh_at == NOW_DT + dt.timedelta(seconds=60)
    assert WebhookDelivery.objects.count() == 1
    assert Event.objects.count() == 1


def test_an_unknown_event_type_gets_400(client, clock, research):
    body = event_body(kind="fine_tuning.job.succeeded")

    response = post(client, body)

    assert response.status_code == 400
    assert response.json() == {"error": "event type fine_tuning.job.succeeded is not handled"}


@pytest.mark.parametrize(
    "body", [b"{not json", b"\xff\xfe\xfd", b"null", b'{"type": "batch.completed"}', b""]
)
def test_a_signed_body_that_is_not_an_event_gets_400(client, clock, research, body):
    response = post(client, body, headers=signed_headers(body))

    assert response.status_code == 400
    assert "error" in response.json()


def test_a_batch_of_another_connection_gets_422_and_is_not_touched(client, clock, research):
    finance = Connection.objects.create(name="Finance", slug="finance", base_url=GATEWAY)
    theirs = cache(finance)
    before = theirs.next_refresh_at

    response = post(client)

    assert response.status_code == 422
    assert response.json() == {"error": "the batch belongs to another connection"}
    theirs.refresh_from_db()
    assert theirs.next_refresh_at == before
    assert not Batch.objects.filter(connection=research).exists()


def test_an_unknown_connection_gets_404(client, clock, research, caplog):
    response = post(client, slug="nobody")

    assert response.status_code == 404
    assert response.json() == NOT_HERE
    assert not WebhookDelivery.objects.exists()
    assert "unknown connection" in caplog.text


def test_a_disabled_connection_gets_the_same_404_and_the_page_says_why(client, clock, research):
    research.enabled = False
    research.save()

    response = post(client)

    assert response.status_code == 404
    assert response.json() == NOT_HERE
    assert WebhookRefusals.objects.get().last_reason == "the connection is disabled"
    assert not WebhookDelivery.objects.exists() and not Event.objects.exists()


def test_a_connection_without_a_secret_gets_the_same_404(client, clock, research):
    research.set_webhook_secret("")
    research.save()

    response = post(client, headers=signed_headers(BODY))

    assert response.status_code == 404
    assert response.json() == NOT_HERE
    refusals = WebhookRefusals.objects.get()
    assert refusals.last_reason == "no webhook secret is set for this connection"
    assert not WebhookDelivery.objects.exists() and not Event.objects.exists()


def test_a_body_over_1_mb_gets_413(client, clock, research):
    body = b'{"pad": "' + b"x" * service.MAX_BODY_BYTES + b'"}'

    response = post(client, body, headers=signed_headers(body))

    assert response.status_code == 413
    assert response.json() == {"error": "the body is larger than 1048576 bytes"}
    assert not WebhookDelivery.objects.exists()
    assert WebhookRefusals.objects.get().count == 1


def test_a_large_declared_length_is_refused_without_reading_the_body(client, clock, research):
    response = post(client, CONTENT_LENGTH=str(50 * 1024 * 1024))

    assert response.status_code == 413


def test_a_body_of_exactly_1_mb_is_read(client, clock, research):
    filler = b" " * (service.MAX_BODY_BYTES - len(BODY))
    body = BODY + filler  # JSON allows trailing whitespace
    assert len(body) == service.MAX_BODY_BYTES

    assert post(client, body).status_code == 200


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_only_post_is_allowed(client, research, method):
    response = getattr(client, method)(url())

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json() == {"error": "only POST is allowed"}


@pytest.mark.parametrize(
    "headers",
    [
        {**signed_headers(BODY), "webhook-id": "x" * 100_000},
        {**signed_headers(BODY), "webhook-signature": "v1," + "A" * 100_000},
        {**signed_headers(BODY), "webhook-timestamp": "9" * 10_000},
        {**signed_headers(BODY), "webhook-id": "wh_\u00e9\u20ac\U0001f600"},
        {**signed_headers(BODY), "webhook-signature": "v1,\u00e9\u00e9\u00e9"},
    ],
)
def test_junk_headers_get_a_4xx_never_a_500(client, clock, research, headers):
    response = post(client, headers=headers)

    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert not WebhookDelivery.objects.exists()
    assert WebhookRefusals.objects.get().count == 1


def test_a_huge_unrelated_header_does_not_matter(client, clock, research):
    headers = {**sdk_accepts_these(BODY, signed_headers(BODY)), "x-junk": "y" * 200_000}

    assert post(client, headers=headers).status_code == 200


@pytest.mark.parametrize("length", ["lots", "-5", "1e3", "٣"])
def test_a_nonsense_content_length_gets_400_not_500(client, clock, research, length):
    response = post(client, CONTENT_LENGTH=length)

    assert response.status_code == 400
    assert response.json() == {"error": "the Content-Length header is not a number"}


# --- Records and secrecy -----------------------------------------------------------------------


def test_each_signed_delivery_leaves_one_row_and_entry_and_the_rest_a_count(
    client, clock, research
):
    cache(research)
    post(client)  # accepted
    post(client)  # delivered again
    post(client, headers=signed_headers(BODY, secret=OTHER_SECRET, webhook_id="wh_forged"))
    paused = event_body(kind="batch.paused")
    post(client, paused, headers=signed_headers(paused, webhook_id="wh_paused"))

    rows = list(
        WebhookDelivery.objects.order_by("id").values_list("webhook_id", "accepted", "detail")
    )
    assert rows == [
        (WEBHOOK_ID, True, "cached as in_progress: refresh requested"),
        ("wh_paused", False, "event type batch.paused is not handled"),
    ]
    events = list(Event.objects.order_by("id").values_list("action", "outcome", "target"))
    assert events == [
        ("webhook", "ok", f"webhook {WEBHOOK_ID}"),
        ("webhook_refused", "failed", "webhook wh_paused"),
    ]
    refusals = WebhookRefusals.objects.get()
    assert (refusals.count, refusals.last_reason) == (1, "no signature matches")


def test_a_hundred_unsigned_posts_write_no_row_no_entry_and_keep_the_page_cache(
    client, clock, research
):
    # Issue 19: each of these stored a delivery and an audit entry and emptied the page cache.
    cache(research)
    before = generation.current()

    answers = {
        post(client, f'{{"n": {n}}}'.encode(), headers={"webhook-id": f"wh_{n}"}).status_code
        for n in range(100)
    }

    assert answers == {400}
    assert not WebhookDelivery.objects.exists()
    assert not Event.objects.exists()
    assert generation.current() == before
    assert WebhookRefusals.objects.get(connection=research).count == 100


def test_a_connection_without_a_secret_writes_nothing_but_its_count(client, clock, research):
    research.set_webhook_secret("")
    research.save()
    before = generation.current()

    answers = {post(client, headers=signed_headers(BODY)).status_code for _ in range(20)}

    assert answers == {404}
    assert not WebhookDelivery.objects.exists() and not Event.objects.exists()
    assert generation.current() == before
    assert WebhookRefusals.objects.get().count == 20


def test_the_connection_page_shows_the_count_of_refused_deliveries(
    client, clock, research, admin_user
):
    post(client, headers=signed_headers(BODY, secret=OTHER_SECRET))
    post(client, headers=signed_headers(BODY, secret=OTHER_SECRET))
    client.force_login(admin_user)

    page = client.get(reverse("connection-detail", args=["research"])).content.decode()

    assert "Refused unverified" in page
    assert "2, the last" in page and "no signature matches" in page


def test_the_secret_never_appears_in_any_answer_or_log(client, clock, research, caplog, settings):
    settings.OPENAI_WEBHOOK_SECRET = OTHER_SECRET
    default = default_connection()
    caplog.set_level("DEBUG")
    cache(research)
    good = signed_headers(BODY)
    answers = [
        post(client),
        post(client),
        post(client, headers=signed_headers(BODY, secret=OTHER_SECRET)),
        post(client, headers={**good, "webhook-timestamp": str(NOW - 999)}),
        post(client, b"{", headers=signed_headers(b"{")),
        post(client, slug=default.slug, headers=signed_headers(BODY, webhook_id="wh_x")),
        post(client, slug="nobody"),
        client.get(url()),
    ]
    research.set_webhook_secret("")
    research.save()
    answers.append(post(client, headers=signed_headers(BODY)))

    seen = " ".join(a.content.decode() + str(a.headers) for a in answers) + caplog.text
    for secret in (SECRET, OTHER_SECRET):
        assert secret.removeprefix("whsec_") not in seen
    assert good["webhook-signature"][3:] not in seen
    assert "synthetic-webhook-secret" not in seen
    assert {a.status_code for a in answers} <= {200, 400, 401, 404, 405, 409}


# --- The whole way: a delivery, then one worker pass -------------------------------------------

API = django_settings.OPENAI_BASE_URL


def test_after_a_completed_delivery_one_worker_pass_brings_the_finished_batch(
    db, client, upstream, settings
):
    settings.OPENAI_WEBHOOK_SECRET = SECRET
    connection = default_connection()
    now = dt.datetime.now(tz=dt.UTC).replace(microsecond=0)
    running = make_batch(id="batch_abc123", status="in_progress")
    batch_upsert(payload=running, connection=connection, now=now)
    # Without the webhook the batch would not be looked at before now + 5 s.
    assert Batch.objects.get().next_refresh_at == now + dt.timedelta(seconds=5)

    # A list walk that brings nothing new: the first page holds only finished batches we have.
    old = [make_batch(id=f"batch_old{i}", status="completed") for i in range(2)]
    for payload in old:
        batch_upsert(payload=payload, connection=connection, now=now - dt.timedelta(hours=1))
    upstream.get(f"{API}/batches", json=make_list(old, has_more=True))
    finished = make_batch(
        id="batch_abc123",
        status="completed",
        completed_at=int(now.timestamp()),
        output_file_id="file-out-1",
    )
    upstream.get(f"{API}/batches/batch_abc123", json=finished)
    # A full walk was done a moment ago: this pass walks incrementally.
    SyncState.get(connection)
    SyncState.objects.filter(connection=connection).update(last_full_sync_at=now)

    body = event_body()
    headers = sdk_accepts_these(
        body,
        signed_headers(body, webhook_id="wh_live", timestamp=int(now.timestamp())),
        now=int(now.timestamp()),
    )
    response = client.post(
        url(connection.slug), data=body, content_type="application/json", headers=headers
    )
    assert response.status_code == 200
    assert not upstream.calls  # answered without calling upstream

    # The next pass, a moment after the delivery (which marked the batch due at its own time).
    result = sync_pass(connection=connection, now=dt.datetime.now(tz=dt.UTC))

    batch = Batch.objects.get(openai_id="batch_abc123")
    assert batch.status == "completed"
    assert batch.output_file_id == "file-out-1"
    assert result.refreshed == 1
    retrieved = [c.request.url for c in upstream.calls if "/batches/batch_abc123" in c.request.url]
    assert len(retrieved) == 1
    assert json.loads(response.content) == {"ok": True}
