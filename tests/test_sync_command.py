"""The sync worker: `manage.py sync_batches`, once or in a loop."""

from __future__ import annotations

import io
import os
import signal
import threading

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from batches.management.commands.sync_batches import Command
from batches.models import Batch, SyncState, default_connection
from batches.services import sync as sync_services
from tests.conftest import make_batch, make_list

API = settings.OPENAI_BASE_URL
LIST_URL = f"{API}/batches"
KEY = settings.OPENAI_API_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    """The loop installs SIGTERM/SIGINT handlers; put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("sync_batches", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def a_page() -> dict:
    return make_list([make_batch(id="batch_1", status="completed")], has_more=False)


def error_body(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def test_it_syncs_once_and_says_what_it_did(upstream, no_sleep):
    upstream.get(LIST_URL, json=a_page())

    out, err = run()

    assert out.startswith("Synced default: 1 pages, 1 batches seen, 1 new")
    assert err == ""
    assert Batch.objects.filter(openai_id="batch_1").exists()
    assert SyncState.get(default_connection()).last_success_at is not None


def test_a_single_run_that_fails_exits_with_the_readable_error(upstream, no_sleep):
    upstream.get(LIST_URL, status=401, json=error_body(f"Incorrect API key provided: {KEY}"))

    with pytest.raises(CommandError) as caught:
        run()

    assert "refused the credentials (HTTP 401)" in str(caught.value)
    assert KEY not in str(caught.value)


def test_the_loop_runs_the_given_number_of_passes(upstream, no_sleep):
    upstream.get(LIST_URL, json=a_page())

    out, _ = run("--loop", "--max-passes", "2", "--interval", "0")

    assert len(upstream.calls) == 2
    assert out.count("sync default: ") == 2
    assert "full sync" in out.splitlines()[0]
    assert out.rstrip().endswith("Sync worker stopped.")


def test_only_the_first_pass_of_a_full_loop_is_full(monkeypatch):
    calls = []
    monkeypatch.setattr(
        sync_services,
        "sync_pass",
        lambda **kwargs: calls.append(kwargs) or sync_services.PassResult(),
    )

    run("--loop", "--full", "--max-passes", "3", "--interval", "0")

    assert [call["full"] for call in calls] == [True, False, False]


def test_a_failing_upstream_in_the_loop_is_reported_and_the_loop_goes_on(
    upstream, no_sleep, settings
):
    settings.SYNC_BACKOFF_MIN_SECONDS = 0  # no wait before the second pass
    upstream.get(LIST_URL, status=503, json=error_body(f"overloaded, key {KEY}"))
    upstream.get(LIST_URL, status=503, json=error_body("overloaded"))
    upstream.get(LIST_URL, status=503, json=error_body("overloaded"))
    upstream.get(LIST_URL, json=a_page())

    out, err = run("--loop", "--max-passes", "2", "--interval", "0")

    assert err.startswith(
        "sync default failed: The OpenAI API is not available right now (HTTP 503)"
    )
    assert "Next try in 0 s; 0 pages listed" in err
    assert KEY not in err + out
    assert "sync default: 1 pages listed, 1 new" in out
    assert Batch.objects.filter(openai_id="batch_1").exists()
    state = SyncState.get(default_connection())
    assert not state.is_failing
    assert "overloaded" in state.last_error


def test_sigterm_stops_the_loop_after_the_current_pass(monkeypatch):
    passes = []

    def one_pass(**kwargs):
        passes.append(kwargs)
        if len(passes) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return sync_services.PassResult()

    monkeypatch.setattr(sync_services, "sync_pass", one_pass)

    out, _ = run("--loop", "--max-passes", "5", "--interval", "0")

    assert len(passes) == 1
    assert f"Received signal {int(signal.SIGTERM)}" in out
    assert "Sync worker stopped." in out


def test_the_signal_handler_sets_the_stop_flag():
    command = Command(stdout=io.StringIO())
    command.stopping = threading.Event()

    command._stop(signal.SIGTERM, None)

    assert command.stopping.is_set()


def test_a_single_run_leaves_the_signal_handlers_alone(upstream, no_sleep):
    before = signal.getsignal(signal.SIGTERM)
    upstream.get(LIST_URL, json=a_page())

    run()

    assert signal.getsignal(signal.SIGTERM) is before
