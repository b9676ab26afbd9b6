"""A connection that was restricted to groups and lost them all (removed, or the group deleted)
is seen by Admins only, everywhere (list, search, batch pages, CSV, /v1/), and its page says
so; it opens to everyone again only when an admin ticks "open to everyone" (issue 19)."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from api.services.tokens import token_create
from batches.models import Batch, Connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch, make_list

pytestmark = pytest.mark.django_db


@pytest.fixture
def secret(research) -> Batch:
    return batch_upsert(
        payload=make_batch(id="batch_secret", status="completed", metadata={"job": "classified"}),
        connection=research,
    ).batch


@pytest.fixture
def member(research) -> User:
    """An Operator who was in Research: the group's going must not open anything to them."""
    user = User.objects.create_user("rita", password="pw-rita-123")
    user.groups.add(Group.objects.get(name="Operators"), Group.objects.get(name="Research"))
    return user


@pytest.fixture
def admin(db) -> User:
    """An Admin by group, not a superuser."""
    user = User.objects.create_user("ada", password="pw-ada-123", is_staff=True)
    user.groups.add(Group.objects.get(name="Admins"))
    return user


def fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)  # no access kept on the object from a request before


def lose_last_group(research: Connection, how: str) -> None:
    if how == "removed":
        research.groups.clear()
    else:
        Group.objects.filter(name="Research").delete()  # a cascade: no m2m signal is sent


def test_adding_a_group_marks_the_connection_restricted(research):
    research.refresh_from_db()

    assert research.restricted


def test_adding_it_from_the_group_s_side_marks_it_too(db):
    connection = Connection.objects.create(name="Lab", slug="lab", base_url="https://lab.test/v1")
    group = Group.objects.create(name="Lab")

    group.connections.add(connection)

    connection.refresh_from_db()
    assert connection.restricted


@pytest.mark.parametrize("how", ["removed", "group deleted"])
def test_without_its_last_group_only_admins_see_it(research, member, viewer, admin, how):
    lose_last_group(research, how)

    assert research.pk not in Connection.objects.visible_to(fresh(member)).ids
    assert research.pk not in Connection.objects.visible_to(fresh(viewer)).ids
    assert research.pk in Connection.objects.visible_to(fresh(admin)).ids


@pytest.mark.parametrize("how", ["removed", "group deleted"])
def test_its_batches_are_nowhere_for_a_former_member(client, research, secret, member, how):
    lose_last_group(research, how)
    client.force_login(member)

    listing = client.get(reverse("batch-list"))
    searched = client.get(reverse("batch-list"), {"q": "classified"})
    export = client.get(reverse("batch-export"))
    table = b"".join(export.streaming_content).decode()
    page = client.get(secret.get_absolute_url())
    connection_page = client.get(reverse("connection-detail", args=["research"]))

    assert "batch_secret" not in listing.content.decode()
    assert [b["openai_id"] for b in searched.context["batches"]] == []
    assert "batch_secret" not in table
    assert page.status_code == 404
    assert connection_page.status_code == 404


def test_an_admin_still_sees_it_and_its_page_says_why(client, research, secret, admin):
    research.groups.clear()
    client.force_login(admin)

    listing = client.get(reverse("batch-list"))
    export = client.get(reverse("batch-export"))
    table = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    page = client.get(reverse("connection-detail", args=["research"])).content.decode()

    assert "batch_secret" in listing.content.decode()
    assert "batch_secret" in {row[0] for row in table[1:]}
    assert client.get(secret.get_absolute_url()).status_code == 200
    assert "Restricted to no group: only Admins can see it." in page
    assert "Add a group or make it open to everyone" in page


def test_an_open_connection_s_page_says_nothing_of_the_kind(client, admin, db):
    client.force_login(admin)

    page = client.get(reverse("connection-detail", args=["default"])).content.decode()

    assert "Restricted to no group" not in page


def test_the_api_refuses_it_to_a_former_member_and_serves_an_admin(
    client, research, member, admin, no_network, monkeypatch
):
    monkeypatch.setenv("RESEARCH_KEY", "sk-research-test")
    research.groups.clear()
    no_network.get("https://research.example.test/v1/batches", json=make_list([]))
    header = {"X-Batchweb-Connection": "research"}
    member_token = token_create(user=member, name="m", scope="read", days=7).plain
    admin_token = token_create(user=admin, name="a", scope="read", days=7).plain

    refused = client.get(
        "/v1/batches", headers={"Authorization": f"Bearer {member_token}", **header}
    )
    served = client.get("/v1/batches", headers={"Authorization": f"Bearer {admin_token}", **header})

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "connection_forbidden"
    assert served.status_code == 200, served.content


def test_a_connection_never_restricted_stays_open_to_everyone(viewer, db):
    connection = Connection.objects.create(name="Open", slug="open", base_url="https://o.test/v1")

    assert connection.pk in Connection.objects.visible_to(fresh(viewer)).ids


# --- The admin form ---------------------------------------------------------------------------


def admin_form_data(connection: Connection, **changes) -> dict[str, str | list[str]]:
    data: dict[str, str | list[str]] = {
        "name": connection.name,
        "slug": connection.slug,
        "enabled": "on",
        "base_url": connection.base_url,
        "dialect": connection.dialect,
        "auth_style": connection.auth_style,
        "api_version": connection.api_version,
        "key_env": connection.key_env,
        "allowed_endpoints": "[]",
        "deployments": "{}",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def change(client, connection: Connection, **changes):
    return client.post(
        reverse("admin:batches_connection_change", args=[connection.pk]),
        admin_form_data(connection, **changes),
    )


def test_removing_the_last_group_in_the_admin_keeps_it_closed(client, admin_user, research, viewer):
    client.force_login(admin_user)

    response = change(client, research)  # no groups sent: all removed

    assert response.status_code == 302, response.content.decode()[:2000]
    research.refresh_from_db()
    assert research.restricted and not research.groups.exists()
    assert research.pk not in Connection.objects.visible_to(fresh(viewer)).ids
    form = client.get(reverse("admin:batches_connection_change", args=[research.pk]))
    assert (
        "only Admins can see it; add a group or make it open to everyone" in form.content.decode()
    )


def test_open_to_everyone_opens_it_again(client, admin_user, research, viewer):
    research.groups.clear()
    client.force_login(admin_user)

    response = change(client, research, open_to_everyone="on")

    assert response.status_code == 302
    research.refresh_from_db()
    assert not research.restricted
    assert research.pk in Connection.objects.visible_to(fresh(viewer)).ids


def test_open_to_everyone_with_groups_chosen_is_refused(client, admin_user, research):
    client.force_login(admin_user)
    group = research.groups.get()

    response = change(client, research, groups=[str(group.pk)], open_to_everyone="on")

    assert response.status_code == 200
    assert "Remove the groups to open it to everyone" in response.content.decode()
    research.refresh_from_db()
    assert research.restricted
