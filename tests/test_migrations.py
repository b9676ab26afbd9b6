"""The models and the migrations agree, and the team groups exist after migrating."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from batches.models import Batch as NewBatch
from batches.models import BatchTally as NewTally
from batches.models import Connection
from batches.models import Submission as NewSubmission
from batches.models import SyncState as NewSyncState


@pytest.mark.django_db
def test_no_model_change_is_missing_a_migration():
    out = io.StringIO()
    call_command("makemigrations", "batches", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_migrating_creates_the_four_roles_with_their_permissions():
    def codenames(name: str) -> set[str]:
        return set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))

    assert codenames("Viewers") == {"view_batch"}
    assert codenames("Submitters") == {"view_batch", "submit_batch", "cancel_batch"}
    assert codenames("Operators") == {
        "view_batch",
        "submit_batch",
        "cancel_batch",
        "cancel_any_batch",
        "sync_batches",
        "manage_labels",
    }
    admins = codenames("Admins")
    assert {"add_connection", "change_connection", "change_user", "add_group"} <= admins
    assert {"change_event", "delete_event"}.isdisjoint(admins)  # the audit trail is read-only


# --- Upgrading an installation of the release before connections -----------------------------


@pytest.fixture
def before_connections(transactional_db):
    """The database as the previous release left it (migrated to 0002), then put back."""
    executor = MigrationExecutor(connection)
    executor.migrate([("batches", "0002_team_groups")])
    executor.loader.build_graph()
    yield executor.loader.project_state([("batches", "0002_team_groups")]).apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_an_installation_of_the_previous_release_upgrades_without_losing_anything(
    before_connections, client
):
    old = before_connections
    User = old.get_model("auth", "User")
    Batch = old.get_model("batches", "Batch")
    Event = old.get_model("batches", "Event")
    ResultFile = old.get_model("batches", "ResultFile")
    ResultRow = old.get_model("batches", "ResultRow")
    Submission = old.get_model("batches", "Submission")
    SyncState = old.get_model("batches", "SyncState")
    BatchTally = old.get_model("batches", "BatchTally")
    ada = User.objects.create(username="ada", is_superuser=True, is_staff=True)
    now = timezone.now()
    batch = Batch.objects.create(
        openai_id="batch_old1",
        status="completed",
        running=False,
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        created_at=now,
        synced_at=now,
        created_by=ada,
        raw={"id": "batch_old1", "status": "completed"},
        submission_token="tok-old",
    )
    Batch.objects.create(
        openai_id="batch_old2", status="in_progress", created_at=now, synced_at=now, raw={}
    )
    Event.objects.create(action="create", user=ada, batch=batch, batch_openai_id="batch_old1")
    ResultFile.objects.create(batch=batch, kind="output", file_id="file-out", path="/x")
    ResultRow.objects.create(batch=batch, custom_id="req-1", ok=True, source="output")
    Submission.objects.create(token="tok-old", user=ada, state="done", batch=batch)
    SyncState.objects.create(pk=1, last_success_at=now, last_error="old trouble")
    BatchTally.objects.create(
        status="completed", endpoint="/v1/chat/completions", model="gpt-4o-mini", count=1
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    default = Connection.objects.get(slug="default")
    assert default.from_settings and default.enabled
    upgraded = NewBatch.objects.get(openai_id="batch_old1")
    assert upgraded.connection == default
    assert NewBatch.objects.filter(connection=default).count() == 2
    assert upgraded.events.get().connection == default
    assert upgraded.result_files.count() == 1 and upgraded.result_rows.count() == 1
    assert NewSubmission.objects.get(token="tok-old").connection == default
    state = NewSyncState.objects.get()
    assert state.connection == default and state.last_error == "old trouble"
    assert NewTally.objects.get().connection_id == default.pk
    # Links of the previous release still lead to the batch.
    client.force_login(get_user_model().objects.get(username="ada"))
    response = client.get("/batches/batch_old1/")
    assert response.status_code == 301 or response.status_code == 302
    assert response["Location"] == "/connections/default/batches/batch_old1/"
    assert client.get(response["Location"]).status_code == 200
    assert client.get("/batches/batch_old1/results/")["Location"].endswith(
        "/connections/default/batches/batch_old1/results/"
    )
