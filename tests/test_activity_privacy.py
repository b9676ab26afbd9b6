"""What the Activity page and its CSV show of an entry depends on who looks (issue 19):

- a failed sign-in's typed name and source address are for Admins only; everyone else sees
  that a sign-in failed, and cannot find one by filtering on a name;
- admin-site changes to what belongs to a connection (its capacity limits, its channels)
  carry that connection, so people who may not see it do not see them either.
"""

from __future__ import annotations

import csv
import io

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from batches.admin_audit import connection_of
from batches.models import CapacityLimit, Channel, Connection, Event, default_connection

pytestmark = pytest.mark.django_db

ACTIVITY = reverse("activity")
EXPORT = reverse("activity-export")
TYPED = "hunter2-typed-as-a-name"
ADDRESS = "203.0.113.77"


@pytest.fixture
def failed_sign_in(db) -> Event:
    return Event.record(
        Event.Action.SIGN_IN_FAILED, username=TYPED, detail=f"from {ADDRESS}; locked out"
    )


@pytest.fixture
def admin(db) -> User:
    user = User.objects.create_user("ada", password="pw-ada-123", is_staff=True)
    user.groups.add(Group.objects.get(name="Admins"))
    return user


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def csv_text(client: Client, **params: str) -> str:
    return b"".join(client.get(EXPORT, params).streaming_content).decode()


@pytest.mark.parametrize("role", ["viewer", "submitter", "operator"])
def test_only_that_a_sign_in_failed_is_shown_to_a_non_admin(request, failed_sign_in, role):
    client = signed_in(request.getfixturevalue(role))

    page = client.get(ACTIVITY).content.decode()
    table = csv_text(client)

    for text in (page, table):
        assert TYPED not in text and ADDRESS not in text
        assert "someone" in text and "sign-in failed" in text


def test_a_non_admin_cannot_find_a_typed_name_by_filtering(viewer, failed_sign_in):
    client = signed_in(viewer)

    page = client.get(ACTIVITY, {"user": TYPED})
    table = list(csv.reader(io.StringIO(csv_text(client, user=TYPED))))

    assert list(page.context["events"]) == []
    assert table[1:] == []


@pytest.mark.parametrize("who", ["admin", "admin_user"])
def test_an_admin_sees_the_typed_name_and_address(request, failed_sign_in, who):
    client = signed_in(request.getfixturevalue(who))

    page = client.get(ACTIVITY, {"user": TYPED}).content.decode()
    table = csv_text(client)

    for text in (page, table):
        assert TYPED in text and ADDRESS in text


def test_other_entries_show_the_person_to_everyone(viewer, submitter):
    Event.record(Event.Action.SIGN_IN, user=submitter, detail="from 198.51.100.1")

    page = signed_in(viewer).get(ACTIVITY).content.decode()

    assert 'href="?user=sam"' in page


# --- Admin-site changes keep their connection -------------------------------------------------


@pytest.fixture
def research(db) -> Connection:
    connection = Connection.objects.create(
        name="Research", slug="research", base_url="https://research.test/v1", key_env="K"
    )
    connection.groups.add(Group.objects.create(name="Research"))
    return connection


def test_capacity_limit_changes_in_the_admin_are_hidden_from_outsiders(
    admin_user, viewer, research
):
    admin_client = signed_in(admin_user)
    response = admin_client.post(
        reverse("admin:batches_capacitylimit_add"),
        {
            "connection": research.pk,
            "model": "secret-model-x",
            "enqueued_tokens": "1000",
            "note": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:1500]
    limit = CapacityLimit.objects.get(model="secret-model-x")
    admin_client.post(
        reverse("admin:batches_capacitylimit_delete", args=[limit.pk]), {"post": "yes"}
    )

    entries = Event.objects.filter(target__contains="secret-model-x")
    assert {e.action for e in entries} == {Event.Action.ADMIN_ADD, Event.Action.ADMIN_DELETE}
    assert {e.connection_id for e in entries} == {research.pk}
    viewer_page = signed_in(viewer).get(ACTIVITY).content.decode()
    assert "secret-model-x" not in viewer_page
    assert "secret-model-x" not in csv_text(signed_in(viewer))
    assert "secret-model-x" in admin_client.get(ACTIVITY).content.decode()


def test_channel_changes_in_the_admin_are_hidden_from_outsiders(
    admin_user, viewer, research, settings
):
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()
    admin_client = signed_in(admin_user)
    response = admin_client.post(
        reverse("admin:batches_channel_add"),
        {
            "name": "research-alerts",
            "kind": "slack",
            "enabled": "on",
            "connections": [str(research.pk)],
            "webhook_url": "https://hooks.example.test/services/T000/B000/XXXX",
        },
    )
    assert response.status_code == 302, response.content.decode()[:1500]

    entry = Event.objects.get(target__contains="research-alerts")
    assert entry.connection_id == research.pk
    assert "research-alerts" not in signed_in(viewer).get(ACTIVITY).content.decode()


def test_a_channel_for_several_connections_records_a_restricted_one(research):
    channel = Channel.objects.create(name="all-alerts", url_encrypted="x", url_host="h")
    channel.connections.add(default_connection(), research)

    assert connection_of(channel) == research


def test_a_channel_for_every_connection_is_about_none(db):
    channel = Channel.objects.create(name="everything", url_encrypted="x", url_host="h")

    assert connection_of(channel) is None


def test_a_group_s_changes_are_not_tied_to_the_connections_it_restricts(research):
    assert connection_of(Group.objects.get(name="Research")) is None
