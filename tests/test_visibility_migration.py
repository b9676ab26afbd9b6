"""Migration 0017 on an existing installation: connections with groups are marked restricted
(so losing their last group later closes them), and audit entries of admin-site changes to a
capacity limit or channel get the connection they belong to, found through Django's admin
log."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from batches.models import Connection, Event

BEFORE = [("batches", "0016_strangers")]


@pytest.fixture
def before(transactional_db):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    executor.loader.build_graph()
    yield executor.loader.project_state(BEFORE).apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_it_marks_restricted_connections_and_connects_admin_entries(before):
    old = before
    User = old.get_model("auth", "User")
    Group = old.get_model("auth", "Group")
    OldConnection = old.get_model("batches", "Connection")
    CapacityLimit = old.get_model("batches", "CapacityLimit")
    OldEvent = old.get_model("batches", "Event")
    ada = User.objects.create(username="ada", is_superuser=True, is_staff=True)
    research = OldConnection.objects.create(name="Research", slug="research", base_url="https://r")
    research.groups.add(Group.objects.create(name="Research"))
    OldConnection.objects.create(name="Open", slug="open", base_url="https://o")
    limit = CapacityLimit.objects.create(connection=research, model="gpt-x", enqueued_tokens=1000)
    kind, _ = ContentType.objects.get_or_create(app_label="batches", model="capacitylimit")
    now = timezone.now()
    repr_ = "gpt-x: 1,000 tokens"
    LogEntry.objects.create(  # Django's admin log: its tables are the same before and after
        user_id=ada.pk,
        content_type=kind,
        object_id=str(limit.pk),
        object_repr=repr_,
        action_flag=1,
        action_time=now,
    )
    OldEvent.objects.create(
        action="admin_add", user=ada, username="ada", target=f"capacity limit {repr_}", at=now
    )
    OldEvent.objects.create(  # a limit deleted since: nothing to find it by
        action="admin_delete",
        user=ada,
        username="ada",
        target="capacity limit gone: 5 tokens",
        at=now - dt.timedelta(days=1),
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert Connection.objects.get(slug="research").restricted
    assert not Connection.objects.get(slug="open").restricted
    added = Event.objects.get(action="admin_add")
    assert added.connection_id == research.pk
    assert Event.objects.get(action="admin_delete").connection_id is None
