"""The worker's chores after each pass: summaries of lately finished batches, and cleanup."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from batches.models import Batch, Submission, default_connection
from batches.services.batches import batch_upsert
from batches.services.sync import sync_pass
from tests.conftest import make_batch, make_list

pytestmark = pytest.mark.django_db
API = settings.OPENAI_BASE_URL


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    settings.SYNC_HOUSEKEEPING_EVERY_SECONDS = 0  # every pass, whatever ran before
    return tmp_path


def finished(openai_id: str, finished_at: dt.datetime) -> dict:
    return make_batch(
        id=openai_id,
        status="completed",
        output_file_id=f"file-out-{openai_id}",
        error_file_id=None,
        completed_at=int(finished_at.timestamp()),
        request_counts={"total": 2, "completed": 1, "failed": 1},
    )


def output_lines() -> str:
    ok = {
        "custom_id": "a",
        "response": {"status_code": 200, "body": {"choices": []}},
        "error": None,
    }
    bad = {
        "custom_id": "b",
        "response": {"status_code": 400, "body": {"error": {"message": "bad", "code": "x"}}},
        "error": None,
    }
    return json.dumps(ok) + "\n" + json.dumps(bad) + "\n"


def test_a_pass_summarizes_a_batch_that_finished_lately(upstream):
    now = timezone.now()
    payload = finished("batch_new", now - dt.timedelta(hours=1))
    batch_upsert(payload=payload)
    upstream.get(f"{API}/batches", json=make_list([payload]))
    upstream.get(f"{API}/files/file-out-batch_new/content", body=output_lines())

    result = sync_pass(connection=default_connection(), full=True)

    batch = Batch.objects.get(openai_id="batch_new")
    assert result.summarized == 1
    assert batch.result_summary["succeeded"] == 1
    assert batch.result_summary["failed"] == 1
    assert "1 results summarized" in str(result)


def test_a_pass_leaves_old_finished_batches_to_be_summarized_on_demand(upstream):
    payload = finished("batch_old", timezone.now() - dt.timedelta(days=20))
    batch_upsert(payload=payload)
    upstream.get(f"{API}/batches", json=make_list([payload]))

    result = sync_pass(connection=default_connection(), full=True)

    assert result.summarized == 0
    assert Batch.objects.get(openai_id="batch_old").summary_computed_at is None
    assert not [c for c in upstream.calls if "/files/" in c.request.url]


def test_a_pass_removes_unconfirmed_uploads_older_than_a_day(upstream, submitter, data_dir):
    staged = Path(data_dir) / "staging" / "old.jsonl"
    staged.parent.mkdir()
    staged.write_text("{}\n")
    submission = Submission.objects.create(
        token="t-old", user=submitter, state=Submission.State.CHECKED, staged_path=str(staged)
    )
    Submission.objects.filter(pk=submission.pk).update(
        updated_at=timezone.now() - dt.timedelta(days=2)
    )
    upstream.get(f"{API}/batches", json=make_list([]))

    sync_pass(connection=default_connection(), full=True)

    assert not staged.exists()
    assert Submission.objects.get(pk=submission.pk).staged_path == ""
    assert os.listdir(Path(data_dir) / "staging") == []


def test_a_pass_never_removes_a_stored_staging_path_outside_data_staging(
    upstream, submitter, data_dir, tmp_path_factory
):
    # A row from before the files rule may name any path: the clean-up forgets it and leaves
    # the file where it is.
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "precious.jsonl"
    elsewhere.write_text("keep me\n")
    beside = Path(data_dir) / "results" / "1-batch_x" / "output.jsonl"
    beside.parent.mkdir(parents=True)
    beside.write_text("cached output\n")
    for token, path in (("t-far", elsewhere), ("t-near", beside)):
        row = Submission.objects.create(
            token=token, user=submitter, state=Submission.State.CHECKED, staged_path=str(path)
        )
        Submission.objects.filter(pk=row.pk).update(
            updated_at=timezone.now() - dt.timedelta(days=2)
        )
    upstream.get(f"{API}/batches", json=make_list([]))

    sync_pass(connection=default_connection(), full=True)

    assert elsewhere.read_text() == "keep me\n"
    assert beside.read_text() == "cached output\n"
    assert set(Submission.objects.values_list("staged_path", flat=True)) == {""}


def test_a_pass_builds_the_results_table_of_a_batch_made_here_that_finished_lately(
    upstream, submitter
):
    from batches.models import ResultRow

    payload = finished("batch_mine", timezone.now() - dt.timedelta(hours=2))
    payload["metadata"] = {"batchweb_user": submitter.username}
    batch_upsert(payload=payload)
    inputs = "".join(
        json.dumps({"custom_id": c, "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "m", "messages": [{"role": "user", "content": c}]}}) + "\n"
        for c in ("a", "b", "c")
    )  # fmt: skip
    upstream.get(f"{API}/batches", json=make_list([payload]))
    upstream.get(f"{API}/files/file-out-batch_mine/content", body=output_lines())
    upstream.get(f"{API}/files/{payload['input_file_id']}/content", body=inputs)

    sync_pass(connection=default_connection(), full=True)

    batch = Batch.objects.get(openai_id="batch_mine")
    assert batch.results_ingested_at is not None
    rows = dict(ResultRow.objects.filter(batch=batch).values_list("custom_id", "ok"))
    assert rows == {"a": True, "b": False, "c": False}  # c never ran


def test_the_pass_that_sees_a_batch_end_prices_and_summarizes_it_at_once(upstream, settings):
    """Not at the next housekeeping (up to a minute later): the page that shows it ended shows
    its cost and its results too."""
    settings.SYNC_HOUSEKEEPING_EVERY_SECONDS = 3600
    upstream.get(f"{API}/batches", json=make_list([]))
    sync_pass(connection=default_connection(), full=True)  # housekeeping done: not due again
    running = make_batch(id="batch_ends", status="in_progress", output_file_id=None)
    batch_upsert(payload=running)
    ended = finished("batch_ends", timezone.now())
    upstream.get(f"{API}/batches", json=make_list([ended]))
    upstream.get(f"{API}/batches/batch_ends", json=ended)
    upstream.get(f"{API}/files/file-out-batch_ends/content", body=output_lines())

    result = sync_pass(connection=default_connection(), full=True)

    batch = Batch.objects.get(openai_id="batch_ends")
    assert batch.status == "completed"
    assert batch.cost_computed_at is not None
    assert batch.result_summary["succeeded"] == 1 and result.summarized == 1


def test_a_pass_that_stores_nothing_new_prices_nothing(upstream, settings):
    settings.SYNC_HOUSEKEEPING_EVERY_SECONDS = 3600
    upstream.get(f"{API}/batches", json=make_list([]))
    sync_pass(connection=default_connection(), full=True)
    old = finished("batch_priced_later", timezone.now() - dt.timedelta(days=3))
    batch_upsert(payload=old)  # stored before the pass: housekeeping's to price
    upstream.get(f"{API}/batches", json=make_list([old]))

    sync_pass(connection=default_connection(), full=True)

    assert Batch.objects.get(openai_id="batch_priced_later").cost_computed_at is None
