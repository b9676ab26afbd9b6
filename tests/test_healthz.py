"""`/healthz`: no sign-in, 200 while the database answers, 503 when it does not; cheap, never
cached, no session, no secrets. Strangers get counts (connections, late, failing), never a
connection's name; the ages by name are for a monitor with BATCHWEB_HEALTH_TOKEN or an
Admin (issue 19)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Group, User
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


def test_a_stranger_gets_counts_and_no_connection_names(client, connections):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    # default passed 42 s ago; research never passed and is failing; fresh never synced; the
    # disabled one is not counted.
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "connections": 3,
        "late": 2,
        "failing": 1,
    }
    text = response.content.decode()
    for name in ("default", "research", "Research", "fresh", "Never synced", "old"):
        assert name not in text


TOKEN = "health-token-for-the-monitor-0123456789"


def test_a_monitor_with_the_token_gets_the_age_of_each_enabled_connection(
    client, connections, settings
):
    settings.HEALTH_TOKEN = TOKEN
    response = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})

    body = response.json()
    assert body["status"] == "ok" and body["late"] == 2
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


@pytest.mark.parametrize(
    "header", ["Bearer wrong-token", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer", ""]
)
def test_a_wrong_or_missing_token_gets_no_names(client, connections, settings, header):
    settings.HEALTH_TOKEN = TOKEN

    body = client.get("/healthz", headers={"Authorization": header}).json()

    assert "workers" not in body and body["connections"] == 3


def test_with_no_token_set_a_bearer_header_opens_nothing(client, connections, settings):
    settings.HEALTH_TOKEN = ""

    body = client.get("/healthz", headers={"Authorization": "Bearer "}).json()

    assert "workers" not in body


def test_a_signed_in_admin_gets_the_names(client, connections, admin_user):
    client.force_login(admin_user)

    body = client.get("/healthz").json()

    assert set(body["workers"]) == {"default", "research", "fresh"}


def test_a_signed_in_admin_by_group_gets_the_names(client, connections):
    user = User.objects.create_user("ada", password="pw-ada-123")
    user.groups.add(Group.objects.get(name="Admins"))
    client.force_login(user)

    assert "workers" in client.get("/healthz").json()


def test_a_signed_in_viewer_gets_counts_only(client, connections, viewer):
    client.force_login(viewer)

    body = client.get("/healthz").json()

    assert "workers" not in body and body["late"] == 2


def test_a_connection_that_passed_long_ago_is_late(client, db):
    state = SyncState.get(default_connection())
    SyncState.objects.filter(pk=state.pk).update(
        last_success_at=timezone.now() - dt.timedelta(hours=1)
    )

    body = client.get("/healthz").json()

    assert (body["connections"], body["late"], body["failing"]) == (1, 1, 0)


def test_it_shows_no_secret_url_or_error(client, connections, settings):
    settings.HEALTH_TOKEN = TOKEN
    text = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode()

    for secret in ("sk-", "key=", "gAAAA", "wxyz", "example", "Incorrect API key"):
        assert secret not in text


def test_it_needs_no_sign_in_and_never_starts_or_writes_a_session(client, connections):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert "Set-Cookie" not in response and not response.cookies
    assert not Session.objects.exists()


def test_it_is_not_cached_and_takes_one_query(
    client, connections, settings, django_assert_max_num_queries
):
    settings.HEALTH_TOKEN = TOKEN
    with django_assert_max_num_queries(1):
        response = client.get("/healthz")
    with django_assert_max_num_queries(1):
        named = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response["Cache-Control"] == "no-store" and named["Cache-Control"] == "no-store"


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

    assert body == {"status": "ok", "database": "ok", "connections": 0, "late": 0, "failing": 0}


def test_it_answers_over_plain_http_when_https_is_required(client, connections, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301  # the rest is redirected
