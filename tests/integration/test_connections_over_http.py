"""Two connections, two simulators over HTTP: each is synced on its own, and one that is down
never stops the other from refreshing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batches.models import Batch, Connection, SyncState, default_connection
from batches.services import sync as sync_services
from simulator import SimulatorServer
from tests.integration.conftest import calls

SECOND_KEY = "sk-second"


@pytest.fixture
def second_server(sim_clock) -> Iterator[SimulatorServer]:
    with SimulatorServer(host="127.0.0.1", port=0, api_key=SECOND_KEY, clock=sim_clock) as server:
        yield server


@pytest.fixture
def second(second_server, monkeypatch, db) -> Connection:
    monkeypatch.setenv("SECOND_KEY", SECOND_KEY)
    return Connection.objects.create(
        name="Second", slug="second", base_url=second_server.base_url, key_env="SECOND_KEY"
    )


def test_each_connection_keeps_its_own_batches_and_sync_state(sim, second, second_server):
    sim.seed_batches(count=3, status="completed")
    second_server.sim.seed_batches(count=2, status="completed")

    sync_services.batches_sync(connection=default_connection(), full=True)
    sync_services.batches_sync(connection=second, full=True)

    assert Batch.objects.filter(connection=default_connection()).count() == 3
    assert Batch.objects.filter(connection=second).count() == 2
    assert SyncState.get(second).last_success_at is not None
    assert calls(second_server.sim, "listBatches") == 1


def test_one_upstream_down_does_not_stop_the_other_from_refreshing(
    sim, sim_clock, second, second_server, waits
):
    second_server.sim.seed_batches(count=1, status="in_progress", requests=50)
    sync_services.batches_sync(connection=second, full=True)
    before = Batch.objects.get(connection=second).requests_done
    sim.set_faults({"server_error": 1000})  # the default connection's upstream is down

    down = sync_services.sync_pass(connection=default_connection())
    sim_clock.now += 5  # the second simulator's batch moves on
    up = sync_services.sync_pass(connection=second)
    still_down = sync_services.sync_pass(connection=default_connection())
    sim_clock.now += 5
    up_again = sync_services.sync_pass(connection=second)

    assert down.failed and "HTTP 500" in down.error
    assert still_down.backoff_seconds > 0 and still_down.note.startswith("upstream failing")
    assert not up.failed and up.changed == 1
    assert not up_again.failed and up_again.changed == 1
    assert Batch.objects.get(connection=second).requests_done > before
    assert SyncState.get(default_connection()).is_failing
    assert not SyncState.get(second).is_failing


def test_a_connection_whose_key_is_missing_fails_alone_with_a_clear_message(
    sim, second, monkeypatch
):
    monkeypatch.delenv("SECOND_KEY")
    sim.seed_batches(count=1, status="completed")

    broken = sync_services.sync_pass(connection=second)
    fine = sync_services.sync_pass(connection=default_connection())

    assert broken.failed
    assert "SECOND_KEY" in broken.error and "not set" in broken.error
    assert SyncState.get(second).is_failing
    assert not fine.failed and fine.new == 1


def test_a_batch_is_created_on_the_connection_the_form_names(
    sim, second, second_server, submitter_client, tmp_path
):
    from tests.integration.conftest import write_jsonl

    path = write_jsonl(tmp_path / "in.jsonl")
    with path.open("rb") as handle:
        checked = submitter_client.post(
            "/batches/new/",
            {
                "connection": "second",
                "input_file": handle,
                "submission_token": "tok-second-0123456789abc",
                "completion_window": "24h",
            },
        )
    created = submitter_client.post(checked["Location"])

    batch = Batch.objects.get()
    assert batch.connection == second
    assert created["Location"] == f"/connections/second/batches/{batch.openai_id}/"
    assert calls(second_server.sim, "createBatch") == 1
    assert calls(sim, "createBatch") == 0 and calls(sim, "createFile") == 0
