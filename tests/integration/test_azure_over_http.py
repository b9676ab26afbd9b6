"""batchweb against the simulator in Azure's dialects, over HTTP: the v1 API (/openai/v1) and
the dated API (?api-version=), with the api-key header. Everything Azure sends differently
(ISO-8601 times, capitalised statuses, "" file ids, no model or usage, an error file that is
always there and may be empty, token_limit_exceeded as a 400 on create) is taken in stride."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.urls import reverse

from batches.models import AuthStyle, Batch, Connection, Event, Submission
from batches.services import batches as batch_services
from batches.services import connections as connection_services
from batches.services import sync as sync_services
from batches.services.submissions import submission_submit
from simulator import SimulatorServer
from tests.integration.conftest import chat_line, wait_until

AZURE_KEY = "azure-key-0123456789"
DEPLOYMENT = "gpt4o-mini-batch"


@pytest.fixture(params=["azure", "azure-legacy"])
def azure(request, sim_clock, monkeypatch, db) -> Iterator[tuple[SimulatorServer, Connection]]:
    with SimulatorServer(
        host="127.0.0.1", port=0, api_key=AZURE_KEY, clock=sim_clock, dialect=request.param
    ) as server:
        monkeypatch.setenv("AZURE_TEST_KEY", AZURE_KEY)
        connection = Connection.objects.create(
            name=f"Azure ({request.param})",
            slug=request.param,
            base_url=server.base_url,
            dialect=request.param,
            auth_style=AuthStyle.API_KEY,
            key_env="AZURE_TEST_KEY",
            deployments={DEPLOYMENT: "gpt-4o-mini"},
        )
        connection.full_clean()
        yield server, connection


def azure_line(custom_id: str, model: str = DEPLOYMENT) -> dict:
    line = chat_line(custom_id)
    line["body"]["model"] = model
    return line


def upload_and_confirm(client, connection: Connection, lines: list[dict], tmp_path, token: str):
    path = tmp_path / "azure.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with path.open("rb") as handle:
        return client.post(
            reverse("batch-create"),
            {
                "connection": connection.slug,
                "input_file": handle,
                "submission_token": token,
                "completion_window": "24h",
            },
        )


def test_batches_listed_by_azure_are_cached_in_openai_s_shape(azure):
    server, connection = azure
    server.sim.seed_batches(count=2, status="completed")
    server.sim.seed_batches(count=1, status="in_progress")

    result = sync_services.batches_sync(connection=connection, full=True)

    assert result.created == 3
    statuses = sorted(Batch.objects.filter(connection=connection).values_list("status", flat=True))
    assert statuses == ["completed", "completed", "in_progress"]
    for batch in Batch.objects.filter(connection=connection):
        assert batch.created_at.year >= 2024  # from an ISO-8601 string
        assert batch.output_file_id != "" or batch.status != "completed"


def test_a_batch_made_from_the_form_runs_to_completion_and_its_results_open(
    azure, submitter_client, tmp_path, settings, sim_clock
):
    _server, connection = azure
    settings.DATA_DIR = tmp_path
    lines = [azure_line(f"req-{i}") for i in range(1, 4)]

    checked = upload_and_confirm(
        submitter_client, connection, lines, tmp_path, "tok-az".ljust(24, "_")
    )
    created = submitter_client.post(checked["Location"])

    batch = Batch.objects.get(connection=connection)
    assert created["Location"] == batch.get_absolute_url()
    assert batch.model == DEPLOYMENT  # Azure sends no model: the checked file names it
    sim_clock.now += 100
    batch = batch_services.batch_refresh(batch=batch)
    assert batch.status == "completed"
    assert batch.request_completed == 3 and batch.error_file_id  # always there, empty
    results = submitter_client.get(
        reverse("batch-results", args=[connection.slug, batch.openai_id])
    )
    assert results.status_code == 200
    assert all(f"req-{i}" in results.content.decode() for i in range(1, 4))
    detail = submitter_client.get(batch.get_absolute_url())
    assert "What the batch produced" in detail.content.decode()


def test_a_line_naming_another_deployment_is_refused_before_anything_is_sent(
    azure, submitter_client, tmp_path
):
    server, connection = azure
    lines = [azure_line("req-1"), azure_line("req-2", model="gpt-4o")]

    response = upload_and_confirm(
        submitter_client, connection, lines, tmp_path, "tok-dep".ljust(24, "_")
    )

    assert response.status_code == 400
    assert "is not a deployment of this connection" in response.content.decode()
    assert server.sim.state()["calls"].get("createFile", 0) == 0


def test_azure_s_full_token_queue_on_create_is_explained_and_creates_nothing(
    azure, submitter, submitter_client, tmp_path
):
    server, connection = azure
    server.sim.set_limits({"enqueued_token_limit": 1})
    lines = [azure_line(f"req-{i}") for i in range(1, 4)]
    checked = upload_and_confirm(
        submitter_client, connection, lines, tmp_path, "tok-full".ljust(24, "_")
    )

    page = submitter_client.post(checked["Location"])

    text = page.content.decode()
    assert page.status_code == 400
    assert "token_limit_exceeded" in text or "Enqueued token limit" in text
    assert "queue of enqueued tokens for this model is full" in text
    assert not Batch.objects.filter(connection=connection).exists()
    failed = Event.objects.get(action=Event.Action.CREATE_FAILED)
    assert failed.connection == connection
    submission = Submission.objects.get(token="tok-full".ljust(24, "_"))
    assert submission.state == Submission.State.FAILED
    # Once there is room, trying again creates the batch (the file is not uploaded twice).
    server.sim.set_limits({"enqueued_token_limit": None})
    batch = submission_submit(submission=submission, user=submitter)
    assert batch.connection == connection
    assert wait_until(lambda: server.sim.state()["calls"]["createFile"] == 1)


def test_test_connection_says_what_works_on_each_azure_dialect(azure):
    _server, connection = azure

    result = connection_services.connection_test(connection=connection)

    assert result.ok, result.message


def test_the_wrong_dialect_is_named_by_test_connection(azure):
    _server, connection = azure
    # Azure's v1 API also answers OpenAI's dialect (with Bearer): take a really wrong one.
    connection.dialect = {"azure": "azure-legacy", "azure-legacy": "openai"}[connection.dialect]

    result = connection_services.connection_test(connection=connection)

    assert not result.ok
    assert "dialect" in result.message.lower() or "url" in result.message.lower()


def test_the_create_form_keeps_azure_s_output_expiry_range(azure, submitter_client):
    _server, connection = azure

    response = submitter_client.post(
        reverse("batch-create"),
        {
            "connection": connection.slug,
            "input_file_id": "file-x",
            "endpoint": "/v1/chat/completions",
            "submission_token": "tok-exp".ljust(24, "_"),
            "completion_window": "24h",
            "output_expires_after_hours": "24",
        },
    )

    assert response.status_code == 400
    assert "336 to 720 hours" in response.content.decode()
    assert connection.request_limit() == 100_000
