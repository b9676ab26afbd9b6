"""Capacity against the simulator over real HTTP: its enqueued-token limit (set through
``/_sim/limits``) fails a batch with ``token_limit_exceeded``; a person asks for it to be
submitted again when there is room; the sync worker (``sync_batches --loop``) waits while the
batch ahead of it runs, and submits it, accepted this time, once that one has finished."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.urls import reverse

from batches.models import (
    Batch,
    CapacityLimit,
    CapacityWait,
    Event,
    Status,
    default_connection,
)
from batches.services.submissions import submission_check_file, submission_submit
from tests.integration.conftest import calls

pytestmark = pytest.mark.django_db

LINES = 30  # 100 tokens a line for both counters (400 characters ÷ 4): 3,000 a file
LIMIT = 5_000  # room for one such file, not two


@pytest.fixture
def keep_signal_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def input_file(tag: str) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"{tag}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": tag[0] * 400}],
                },
            }
        ).encode()
        + b"\n"
        for i in range(LINES)
    )


def submit(user, tag: str) -> Batch:
    """A batch created through batchweb's own create path, as the form does it."""
    submission, report = submission_check_file(
        user=user,
        token=f"tok-{tag}",
        connection=default_connection(),
        stream=io.BytesIO(input_file(tag)),
        filename=f"{tag}.jsonl",
        endpoint=None,
        request={"completion_window": "24h", "metadata": {"job": tag}},
    )
    assert report.ok and submission is not None
    assert submission.facts["estimated_input_tokens"] == 3000
    return submission_submit(submission=submission, user=user)


def worker_pass() -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "sync_batches", "--loop", "--max-passes", "1", "--interval", "0", stdout=out, stderr=err
    )
    assert err.getvalue() == ""
    return out.getvalue()


def test_the_worker_submits_again_only_once_the_batch_ahead_has_finished(
    sim, sim_server, submitter, client, data_dir, keep_signal_handlers
):
    limits = requests.post(
        f"{sim_server.root_url}/_sim/limits", json={"enqueued_token_limit": LIMIT}, timeout=5
    )
    assert limits.json()["enqueued_token_limit"] == LIMIT
    CapacityLimit.objects.create(
        connection=default_connection(), model="gpt-4o-mini", enqueued_tokens=LIMIT
    )
    ahead = submit(submitter, "ahead")
    full = submit(submitter, "full")  # OpenAI takes it, then fails it after validating
    sim.advance(5)
    worker_pass()
    ahead.refresh_from_db()
    full.refresh_from_db()
    assert ahead.status == Status.IN_PROGRESS
    assert full.status == Status.FAILED
    assert full.error_list()[0]["code"] == "token_limit_exceeded"
    creates = calls(sim, "createBatch")

    client.force_login(submitter)
    page = client.get(full.get_absolute_url()).content.decode()
    assert "Submit again when there is room" in page
    client.post(reverse("batch-capacity-wait", args=["default", full.openai_id]))
    wait = CapacityWait.objects.get()
    assert (wait.tokens_needed, wait.state) == (3000, CapacityWait.State.WAITING)

    # The batch ahead still runs: 3,000 of 5,000 enqueued, 3,000 needed. Nothing is sent.
    sim.advance(5)
    worker_pass()
    wait.refresh_from_db()
    assert (wait.state, wait.room) == (CapacityWait.State.WAITING, 2000)
    assert calls(sim, "createBatch") == creates
    page = client.get(full.get_absolute_url()).content.decode()
    assert "3,000 tokens needed, 2,000 free" in page

    sim.advance(60)  # the batch ahead finishes (30 requests at a second each, then finalizing)
    out = worker_pass()

    assert "capacity: 1 resubmitted" in out
    assert calls(sim, "createBatch") == creates + 1
    wait.refresh_from_db()
    again = wait.new_batch
    assert wait.state == CapacityWait.State.SUBMITTED
    assert Batch.objects.get(pk=ahead.pk).status == Status.COMPLETED
    assert (again.retry_of, again.input_file_id, again.created_by) == (
        full,
        full.input_file_id,
        submitter,
    )
    # The simulator had room this time: the new batch runs instead of failing.
    sim.advance(5)
    worker_pass()
    again.refresh_from_db()
    assert again.status == Status.IN_PROGRESS and not again.error_list()
    assert list(
        Event.objects.filter(action__startswith="capacity")
        .order_by("at", "id")
        .values_list("action", flat=True)
    ) == ["capacity_wait", "capacity_submit"]
    # Another pass sends nothing more.
    worker_pass()
    assert calls(sim, "createBatch") == creates + 1
