"""An installation of the previous release upgrades without losing anything.

The previous release is the last landing (commit 24bef9d, issues 9 and 10 and the start of
issue 11): its newest migration is `batches.0010_costs`. The test migrates a database back to
that state, fills it through the historical models with rows like a team's after a few weeks
(batches in every status with usage, metadata, costs and labels; two connections; submissions,
result rows, the audit trail, notifications, webhooks, watches, progress snapshots, price
overrides), migrates forward to the newest migration, and checks that every row and value
survived and that what the new migrations add starts from its default. Runs on SQLite and on
PostgreSQL (DATABASE_URL).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.apps import apps as current_apps
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from batches.models import Batch, Connection, Event, SpendRollup
from batches.services.spend import spend_rollup

# The newest migration of the last landed release. When a release lands, move this to its newest
# migration (and fill the tables it added in `_fill`).
PREVIOUS_RELEASE = [("batches", "0010_costs")]

# The models of the previous release whose rows the upgrade must keep, by app label.
KEPT = [
    ("auth", "User"),
    ("auth", "Group"),
    ("batches", "Connection"),
    ("batches", "Batch"),
    ("batches", "Submission"),
    ("batches", "ResultFile"),
    ("batches", "ResultRow"),
    ("batches", "Event"),
    ("batches", "SyncState"),
    ("batches", "BatchTally"),
    ("batches", "Watch"),
    ("batches", "NotificationPreference"),
    ("batches", "Channel"),
    ("batches", "Outbox"),
    ("batches", "WebhookDelivery"),
    ("batches", "ProgressSnapshot"),
    ("batches", "PriceOverride"),
]


@pytest.fixture
def previous_release(transactional_db):
    """The database as the previous release left it; migrated to the newest again afterwards,
    whatever the test did."""
    executor = MigrationExecutor(connection)
    executor.migrate(PREVIOUS_RELEASE)
    executor.loader.build_graph()
    yield executor.loader.project_state(PREVIOUS_RELEASE).apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _fill(old) -> dict:
    """A team's rows, written through the previous release's models."""
    User = old.get_model("auth", "User")
    Group = old.get_model("auth", "Group")
    Connection_ = old.get_model("batches", "Connection")
    Batch_ = old.get_model("batches", "Batch")
    now = timezone.now().replace(microsecond=0)
    day = dt.timedelta(days=1)

    ada = User.objects.create(username="ada", email="ada@example.com", is_superuser=True)
    bob = User.objects.create(username="bob", email="bob@example.com")
    bob.groups.add(Group.objects.get(name="Submitters"))
    default = Connection_.objects.get(slug="default")
    azure = Connection_.objects.create(
        name="Azure EU",
        slug="azure-eu",
        base_url="https://eu.openai.azure.com/openai/v1",
        dialect="azure",
        auth_style="api-key",
        key_encrypted="gAAAAAB-not-a-real-token",
        key_last4="abcd",
        deployments={"gpt4o-batch": "gpt-4o"},
        allowed_endpoints=["/v1/chat/completions"],
    )
    azure.groups.add(Group.objects.get(name="Operators"))

    def batch(openai_id: str, status: str, conn, **fields):
        running = status in {"validating", "in_progress", "finalizing", "cancelling"}
        metadata = fields.pop("metadata", {"job": f"job-{openai_id}", "team": "search"})
        return Batch_.objects.create(
            connection=conn,
            openai_id=openai_id,
            status=status,
            running=running,
            endpoint="/v1/chat/completions",
            model=fields.pop("model", "gpt-4o-mini"),
            completion_window="24h",
            input_file_id=f"file-in-{openai_id}",
            created_at=fields.pop("created_at", now - 3 * day),
            synced_at=now,
            metadata=metadata,
            label=metadata.get("job", ""),
            raw={"id": openai_id, "status": status, "metadata": metadata},
            search_text=f"{openai_id}\njob=job-{openai_id}",
            **fields,
        )

    completed = batch(
        "batch_done",
        "completed",
        default,
        created_by=bob,
        submission_token="tok-done",
        output_file_id="file-out-done",
        completed_at=now - 2 * day,
        request_total=1000,
        request_completed=990,
        request_failed=10,
        input_tokens=1_250_000,
        cached_tokens=50_000,
        output_tokens=310_000,
        reasoning_tokens=0,
        total_tokens=1_560_000,
        cost_usd=Decimal("0.279000"),
        list_cost_usd=Decimal("0.558000"),
        cost_source="genai-prices batch rates",
        cost_computed_at=now - 2 * day,
        result_summary={"ok": 990, "failed": 10},
        summary_computed_at=now - 2 * day,
        results_ingested_at=now - 2 * day,
        input_filename="questions.jsonl",
        input_bytes=4_200_000,
        input_lines=1000,
    )
    failed = batch(
        "batch_failed",
        "failed",
        default,
        failed_at=now - day,
        errors={"object": "list", "data": [{"code": "invalid_json", "line": 3}]},
        cost_note="usage unknown",
        cost_computed_at=now - day,
    )
    running = batch(
        "batch_running",
        "in_progress",
        azure,
        model="gpt4o-batch",
        created_by=ada,
        request_total=500,
        request_completed=120,
        request_failed=0,
        next_refresh_at=now + dt.timedelta(seconds=30),
        refresh_interval=20.0,
        expires_at=now + day,
        metadata={"label": "nightly eval", "batchweb_user": "ada"},
    )
    batch("batch_cancelled", "cancelled", default, cancelled_at=now - day, created_by=ada)
    batch("batch_expired", "expired", azure, expired_at=now - day, model="gpt4o-batch")
    edited = batch("batch_relabelled", "completed", default, completed_at=now - day)
    Batch_.objects.filter(pk=edited.pk).update(label="renamed by an operator", label_edited=True)
    retry = batch("batch_retry", "validating", default, retry_of=completed, created_by=bob)

    old.get_model("batches", "Submission").objects.create(
        token="tok-done",
        user=bob,
        connection=default,
        state="done",
        batch=completed,
        filename="questions.jsonl",
        facts={"lines": 1000, "bytes": 4_200_000, "model": "gpt-4o-mini"},
        request={"endpoint": "/v1/chat/completions", "completion_window": "24h"},
        uploaded_file_id="file-in-batch_done",
    )
    old.get_model("batches", "ResultFile").objects.create(
        batch=completed,
        kind="output",
        file_id="file-out-done",
        path="/data/results/1/output.jsonl",
        bytes=9_000,
        lines=990,
    )
    ResultRow = old.get_model("batches", "ResultRow")
    ResultRow.objects.bulk_create(
        ResultRow(
            batch=completed,
            custom_id=f"req-{n}",
            input_line=n,
            source="output" if n < 3 else "error",
            ok=n < 3,
            status_code=200 if n < 3 else 400,
            error_code="" if n < 3 else "invalid_request",
            answer_preview=f"answer {n}",
            input_tokens=100 + n,
        )
        for n in range(5)
    )
    Event = old.get_model("batches", "Event")
    Event.objects.create(action="sign_in", user=ada, username="ada", detail="from 10.0.0.1")
    Event.objects.create(
        action="create", user=bob, username="bob", batch=completed,
        batch_openai_id="batch_done", connection=default, target="questions.jsonl",
    )  # fmt: skip
    Event.objects.create(
        action="cancel_failed", user=ada, username="ada", batch=running,
        batch_openai_id="batch_running", connection=azure, outcome="failed",
        detail="Upstream said no", request_id="req_upstream_1",
    )  # fmt: skip
    Event.objects.create(action="sign_in_failed", username="mallory", outcome="failed")
    old.get_model("batches", "SyncState").objects.create(
        connection=default, last_success_at=now, last_full_sync_at=now - day
    )
    old.get_model("batches", "SyncState").objects.create(
        connection=azure, last_error="rate limited", failing_since=now, last_error_at=now
    )
    old.get_model("batches", "BatchTally").objects.create(
        connection_id=default.pk, status="completed", endpoint="/v1/chat/completions",
        model="gpt-4o-mini", creator_id=bob.pk, count=1,
    )  # fmt: skip
    old.get_model("batches", "Watch").objects.create(user=ada, batch=running)
    old.get_model("batches", "NotificationPreference").objects.create(user=ada, at_risk=True)
    channel = old.get_model("batches", "Channel").objects.create(
        name="team-chat", kind="slack", url_encrypted="gAAAAAB-url", url_host="hooks.example"
    )
    channel.connections.add(default)
    Outbox = old.get_model("batches", "Outbox")
    Outbox.objects.create(
        key="email:ada:batch_done", channel="email", recipient="ada@example.com", user=ada,
        batch=completed, event="completed", subject="batch_done completed", body="Done.",
        state="sent", attempts=1, sent_at=now,
    )  # fmt: skip
    Outbox.objects.create(
        key="chat:team-chat:batch_failed", channel="chat", recipient="team-chat",
        batch=failed, event="failed", subject="batch_failed failed", body="Failed.",
        attempts=3, last_error="timed out",
    )  # fmt: skip
    old.get_model("batches", "WebhookDelivery").objects.create(
        connection=default, webhook_id="wh_1", event_type="batch.completed",
        batch_openai_id="batch_done", accepted=True,
    )  # fmt: skip
    old.get_model("batches", "ProgressSnapshot").objects.create(
        batch=running, at=now - dt.timedelta(minutes=10), completed=100, failed=0, total=500
    )
    old.get_model("batches", "PriceOverride").objects.create(
        model="gpt-4o", input_per_mtok=Decimal("1.250000"),
        output_per_mtok=Decimal("5.000000"), note="our contract",
    )  # fmt: skip
    return {"now": now, "ids": {"default": default.pk, "azure": azure.pk, "retry": retry.pk}}


def _counts(apps_) -> dict[tuple[str, str], int]:
    return {key: apps_.get_model(*key).objects.count() for key in KEPT}


def test_a_populated_database_of_the_previous_release_upgrades_without_losing_anything(
    previous_release, client
):
    filled = _fill(previous_release)
    before = _counts(previous_release)
    old_tables = {m._meta.db_table for m in previous_release.get_models()}

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    # Every row is still there.
    assert _counts(current_apps) == before
    assert before[("batches", "Batch")] == 7 and before[("batches", "Event")] == 4

    # Values came through unchanged.
    done = Batch.objects.get(openai_id="batch_done")
    assert done.status == "completed" and not done.running
    assert (done.input_tokens, done.cached_tokens, done.output_tokens) == (
        1_250_000,
        50_000,
        310_000,
    )
    assert done.request_failed == 10 and done.created_by.username == "bob"
    assert done.metadata == {"job": "job-batch_done", "team": "search"}
    assert done.label == "job-batch_done"
    assert done.cost_usd == Decimal("0.279") and done.list_cost_usd == Decimal("0.558")
    assert done.cost_text() == "$0.28 estimated (saved $0.28 against list price)"
    assert done.result_rows.count() == 5 and done.result_rows.filter(ok=False).count() == 2
    assert done.result_files.get().path == "/data/results/1/output.jsonl"
    assert done.retries.get().openai_id == "batch_retry"
    assert Batch.objects.get(openai_id="batch_failed").errors["data"][0]["code"] == "invalid_json"
    running = Batch.objects.get(openai_id="batch_running")
    assert running.connection.slug == "azure-eu" and running.running
    assert running.next_refresh_at == filled["now"] + dt.timedelta(seconds=30)
    assert running.watches.get().user.username == "ada"
    relabelled = Batch.objects.get(openai_id="batch_relabelled")
    assert relabelled.label == "renamed by an operator" and relabelled.label_edited
    azure = Connection.objects.get(slug="azure-eu")
    assert azure.key_encrypted == "gAAAAAB-not-a-real-token" and azure.key_last4 == "abcd"
    assert azure.deployments == {"gpt4o-batch": "gpt-4o"}
    assert list(azure.groups.values_list("name", flat=True)) == ["Operators"]
    failed_cancel = Event.objects.get(action="cancel_failed")
    assert failed_cancel.request_id == "req_upstream_1" and failed_cancel.failed
    assert failed_cancel.batch == running and failed_cancel.connection == azure
    assert set(Event.objects.values_list("username", flat=True)) == {"ada", "bob", "mallory"}

    # What the newer migrations add starts from its default.
    assert not Batch.objects.filter(spend_rolled=True).exists()
    assert not SpendRollup.objects.exists()
    for model in current_apps.get_models():
        if model._meta.db_table not in old_tables and not model._meta.proxy:
            assert not model.objects.exists(), f"{model.__name__} is new and should start empty"

    # The new code works on the old rows: the spend roll-up counts every finished batch once...
    assert spend_rollup(seconds=10.0) > 0
    assert not Batch.objects.filter(spend_rolled=False).exists()
    total = SpendRollup.objects.get(
        connection_id=filled["ids"]["default"], period="month", dimension="total", key=""
    )
    assert total.cost_usd == Decimal("0.279")
    # ...and the pages of the upgraded batches open.
    client.force_login(get_user_model().objects.get(username="ada"))
    for url in (
        "/",
        "/activity/",
        done.get_absolute_url(),
        Batch.objects.get(openai_id="batch_failed").get_absolute_url(),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
    assert b"batch_done" in client.get("/").content
