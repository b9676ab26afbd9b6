"""`/healthz`: no sign-in, 200 with the workers' ages while the database answers, 503 when it
does not; cheap, never cached, no session, no secrets."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.sessions.models import Session
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from batches.models import Connection, SyncState, default_connection

pytestmark = pytest.mark.django_db


@pytest.fixture
def connections(db) -> dict[str, Connection]:
    now = timezone.now()
    default = default_connection()
    SyncState.objects.create(connection=default, last_success_at=now - dt.timedelta(seconds=42))
    research = Connection.objects.create(
        name="Research",
        slug="research",
        base_url="https://research.example/v1?key=sk-in-a-url-never-shown",
        key_encrypted="gAAAAAB-secret",
        key_last4="wxyz",
    )
    state = SyncState.get(research)
    state.record_failure(RuntimeError("Incorrect API key sk-research-secret"), now=now)
    Connection.objects.create(name="Never synced", slug="fresh", base_url="https://fresh.example")
    Connection.objects.create(name="Old", slug="old", base_url="https://old.example", enabled=False)
    return {"default": default, "research": research}


def test_it_answers_200_with_the_age_of_each_enabled_connections_last_pass(client, connections):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert set(body["workers"]) == {"default", "research", "fresh"}  # not the disabled one
    assert 42 <= body["workers"]["default"]["last_pass_age_seconds"] <= 45
    assert body["workers"]["default"]["failing_for_seconds"] is None
    assert body["workers"]["research"]["last_pass_age_seconds"] is None
    assert body["workers"]["research"]["last_attempt_age_seconds"] <= 3
    assert body["workers"]["research"]["failing_for_seconds"] <= 3
    assert body["workers"]["fresh"] == {
        "last_pass_age_seconds": None,
        "last_attempt_age_seconds": None,
        "failing_for_seconds": None,
    }


def test_it_shows_no_secret_url_or_error(client, connections):
    text = client.get("/healthz").content.decode()

    for secret in ("sk-", "key=", "gAAAA", "wxyz", "example", "Incorrect API key"):
        assert secret not in text


def test_it_needs_no_sign_in_and_never_starts_or_writes_a_session(client, connections):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert "Set-Cookie" not in response and not response.cookies
    assert not Session.objects.exists()


def test_it_is_not_cached_and_takes_one_query(client, connections, django_assert_max_num_queries):
    with django_assert_max_num_queries(1):
        response = client.get("/healthz")

    assert response["Cache-Control"] == "no-store"


def test_a_load_balancers_head_request_is_answered(client, connections):
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def test_it_answers_503_when_the_database_does_not(client, connections, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise OperationalError('connection to server at "db.internal" failed: password wrong')

    monkeypatch.setattr(CursorWrapper, "execute", refuse)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unreachable"}
    assert response["Cache-Control"] == "no-store"
    assert "db.internal" not in response.content.decode()
    assert "db.internal" not in caplog.text and "OperationalError" in caplog.text


def test_with_no_connection_enabled_the_workers_are_empty(client, db):
    Connection.objects.update(enabled=False)
    body = client.get("/healthz").json()

    assert body == {"status": "ok", "database": "ok", "workers": {}}


def test_it_answers_over_plain_http_when_https_is_required(client, connections, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301  # the rest is redirected
