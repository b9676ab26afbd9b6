"""The audit trail: an entry for every action, failed ones included with the upstream request
id; append-only for everyone; filters, cursor pages and CSV on the Activity page."""

from __future__ import annotations

import csv
import io

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection as db
from django.urls import reverse

from batches.models import AuditLogIsAppendOnly, Batch, Connection, Event, default_connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db
API = settings.OPENAI_BASE_URL


def actions() -> list[tuple[str, str, str]]:
    return [(e.action, e.username, e.outcome) for e in Event.objects.order_by("id")]


@pytest.fixture
def batch(db) -> Batch:
    return batch_upsert(payload=make_batch(id="batch_aud1", status="in_progress")).batch


# --- Append-only -----------------------------------------------------------------------------


def test_no_one_can_change_or_delete_an_entry(admin_user, batch):
    event = Event.record(Event.Action.CANCEL, user=admin_user, batch=batch)

    event.detail = "rewritten"
    with pytest.raises(AuditLogIsAppendOnly):
        event.save()
    with pytest.raises(AuditLogIsAppendOnly):
        event.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        Event.objects.filter(pk=event.pk).update(detail="rewritten")
    with pytest.raises(AuditLogIsAppendOnly):
        Event.objects.all().delete()
    assert Event.objects.get(pk=event.pk).detail == ""


def test_the_admin_site_shows_the_trail_read_only_even_to_superusers(client, admin_user, batch):
    event = Event.record(Event.Action.CANCEL, user=admin_user, batch=batch)
    client.force_login(admin_user)

    listing = client.get("/admin/batches/event/")
    change = client.post(f"/admin/batches/event/{event.pk}/change/", {"detail": "x"})
    delete = client.post(f"/admin/batches/event/{event.pk}/delete/", {"post": "yes"})
    bulk = client.post(
        "/admin/batches/event/", {"action": "delete_selected", "_selected_action": [event.pk]}
    )

    assert listing.status_code == 200
    assert change.status_code == 403 and delete.status_code == 403
    assert bulk.status_code in (200, 302)
    assert Event.objects.filter(pk=event.pk, detail="").exists()


def test_deleting_a_batch_or_a_person_keeps_their_history(admin_user, batch, submitter):
    Event.record(Event.Action.CANCEL, user=submitter, batch=batch)

    Batch.objects.filter(pk=batch.pk).delete()
    User.objects.filter(pk=submitter.pk).delete()

    event = Event.objects.get()
    assert event.batch is None and event.batch_openai_id == "batch_aud1"
    assert event.user is None and event.username == "sam"
    assert event.connection == default_connection()


# --- Every action writes an entry ------------------------------------------------------------


@pytest.mark.audit_sign_ins
def test_signing_in_failing_to_and_signing_out_are_recorded(client, submitter):
    client.post(reverse("login"), {"username": "sam", "password": "wrong"})
    client.post(reverse("login"), {"username": "sam", "password": "pw-sam-123"})
    client.post(reverse("logout"))

    assert actions() == [
        ("sign_in_failed", "sam", "failed"),
        ("sign_in", "sam", "ok"),
        ("sign_out", "sam", "ok"),
    ]
    assert "wrong" not in " ".join(Event.objects.values_list("detail", flat=True))


def test_a_failed_cancel_keeps_the_upstream_message_and_request_id(
    operator_client, batch, upstream
):
    upstream.post(
        f"{API}/batches/batch_aud1/cancel",
        status=409,
        json={"error": {"message": "already finishing", "type": "invalid_request_error"}},
        headers={"x-request-id": "req_cancel409"},
    )

    operator_client.post(reverse("batch-cancel", args=["default", "batch_aud1"]))

    event = Event.objects.get(action=Event.Action.CANCEL_FAILED)
    assert event.failed and event.request_id == "req_cancel409"
    assert "already finishing" in event.detail and event.username == "olga"


def test_sync_now_is_recorded_with_its_outcome(operator_client, upstream):
    upstream.get(f"{API}/batches", json={"object": "list", "data": [], "has_more": False})
    operator_client.post(reverse("batch-sync"))
    upstream.get(f"{API}/batches", status=503, json={"error": {"message": "down"}})
    operator_client.post(reverse("batch-sync"))

    assert [(a, o) for a, _, o in actions()] == [("sync", "ok"), ("sync_failed", "failed")]


def test_a_label_change_is_recorded(operator_client, batch):
    operator_client.post(
        reverse("batch-label", args=["default", "batch_aud1"]), {"label": "quarterly"}
    )

    event = Event.objects.get(action=Event.Action.LABEL)
    assert event.batch == batch and "quarterly" in event.detail


def test_changes_to_people_groups_and_connections_in_the_admin_site_are_recorded(
    client, admin_user, settings
):
    from cryptography.fernet import Fernet

    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()
    client.force_login(admin_user)
    bob = User.objects.create_user("bob", password="pw-bob-123")

    client.post(
        f"/admin/auth/user/{bob.pk}/change/",
        {
            "username": "bob",
            "is_active": "on",
            "groups": [Group.objects.get(name="Operators").pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
        },
    )
    client.post("/admin/auth/group/add/", {"name": "Research"})
    client.post(
        "/admin/batches/connection/add/",
        {
            "name": "Azure EU",
            "slug": "azure-eu",
            "base_url": "https://eu.example.test/openai/v1",
            "dialect": "azure",
            "auth_style": "api-key",
            "api_version": "2024-10-21",
            "key_env": "AZURE_EU_KEY",
            "allowed_endpoints": "[]",
            "deployments": "{}",
            "enabled": "on",
        },
    )

    entries = {(e.action, e.target) for e in Event.objects.filter(username="alice")}
    assert ("admin_change", "user bob") in entries
    assert ("admin_add", "group Research") in entries
    assert ("admin_add", "connection Azure EU") in entries
    assert Event.objects.get(target="connection Azure EU").connection == Connection.objects.get(
        slug="azure-eu"
    )


# --- The Activity page -----------------------------------------------------------------------


@pytest.fixture
def trail(batch, submitter, admin_user) -> None:
    research = Connection.objects.create(
        name="Research", slug="research", base_url="https://r.example.test/v1", key_env="R"
    )
    Event.record(Event.Action.CREATE, user=submitter, batch=batch, detail="=cmd|' /C calc'!A0")
    Event.record(Event.Action.CANCEL, user=admin_user, batch=batch)
    Event.record(Event.Action.SYNC, user=admin_user, connection=research)


def texts(response) -> list[str]:
    return [e.get_action_display() + " " + e.username for e in response.context["events"]]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"user": "sam"}, ["created sam"]),
        ({"action": "cancel"}, ["cancelled alice"]),
        ({"connection": "research"}, ["synced alice"]),
        ({"batch": "batch_aud1"}, ["cancelled alice", "created sam"]),
        (
            {"since": "2000-01-01", "until": "2999-12-31"},
            ["synced alice", "cancelled alice", "created sam"],
        ),
        ({"until": "2000-01-01"}, []),
        ({"action": "no-such-action"}, ["synced alice", "cancelled alice", "created sam"]),
    ],
)
def test_the_activity_filters_by_person_action_connection_batch_and_time(
    viewer_client, trail, params, expected
):
    response = viewer_client.get(reverse("activity"), params)

    assert response.status_code == 200
    assert texts(response) == expected


def test_a_restricted_connection_s_entries_are_hidden_from_outsiders(viewer_client, trail):
    Connection.objects.get(slug="research").groups.add(Group.objects.create(name="Research"))

    response = viewer_client.get(reverse("activity"))

    assert texts(response) == ["cancelled alice", "created sam"]


def test_the_activity_exports_csv_with_the_filters_and_no_formulas(viewer_client, trail):
    response = viewer_client.get(reverse("activity-export"), {"user": "sam"})

    table = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert table[0][:4] == ["at", "who", "action", "outcome"]
    (row,) = table[1:]
    assert row[1] == "sam" and row[2] == "created" and row[5] == "batch_aud1"
    assert row[7] == "'=cmd|' /C calc'!A0"


def test_a_batch_page_shows_its_own_history(viewer_client, trail, upstream):
    upstream.get(f"{API}/batches/batch_aud1", json=make_batch(id="batch_aud1"))

    page = viewer_client.get(reverse("batch-detail", args=["default", "batch_aud1"]))

    assert [e.action for e in page.context["events"]] == ["cancel", "create"]


def test_the_activity_page_costs_the_same_queries_for_ten_or_a_hundred_entries(
    viewer_client, batch, submitter, django_assert_max_num_queries
):
    from django.test.utils import CaptureQueriesContext

    for _ in range(10):
        Event.record(Event.Action.CREATE, user=submitter, batch=batch)
    viewer_client.get(reverse("activity"))  # the person's lookups, kept for everyone's number
    with CaptureQueriesContext(db) as few:
        viewer_client.get(reverse("activity"))
    for _ in range(90):
        Event.record(Event.Action.CREATE, user=submitter, batch=batch)
    with CaptureQueriesContext(db) as many:
        viewer_client.get(reverse("activity"))

    assert len(many) == len(few)
