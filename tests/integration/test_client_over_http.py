"""The OpenAI client against the simulator over real sockets: the happy path and every error
class, each produced by a real HTTP answer rather than a canned one."""

from __future__ import annotations

import json
import time

import pytest

from batches.openai_client import (
    AuthError,
    BadResponse,
    InvalidRequest,
    NotFound,
    OpenAIClient,
    UpstreamUnavailable,
)
from tests.integration.conftest import API_KEY, calls, write_jsonl

ENDPOINT = "/v1/chat/completions"


def test_a_jsonl_file_on_disk_goes_up_becomes_a_batch_and_its_results_come_back(
    tmp_path, make_client, sim
):
    client = make_client()
    path = write_jsonl(tmp_path / "requests.jsonl", count=3)

    with path.open("rb") as handle:
        uploaded = client.upload_file(fileobj=handle, filename="requests.jsonl")
    assert uploaded["id"].startswith("file-")
    assert uploaded["bytes"] == path.stat().st_size
    assert uploaded["purpose"] == "batch"
    assert client.retrieve_file(uploaded["id"])["filename"] == "requests.jsonl"
    assert b"".join(client.iter_file_content(uploaded["id"])) == path.read_bytes()

    created = client.create_batch(
        input_file_id=uploaded["id"], endpoint=ENDPOINT, metadata={"job": "nightly"}
    )
    assert created["status"] == "validating"
    assert created["id"].startswith("batch_")

    fetched = client.retrieve_batch(created["id"])
    assert fetched["id"] == created["id"]
    assert fetched["metadata"] == {"job": "nightly"}

    sim.advance(2 + 3 + 2 + 1)  # validating, one second a request, finalizing
    done = client.retrieve_batch(created["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}

    output = b"".join(client.iter_file_content(done["output_file_id"], chunk_size=64))
    lines = [json.loads(line) for line in output.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["req-1", "req-2", "req-3"]
    assert all(line["response"]["status_code"] == 200 for line in lines)


def test_listing_250_batches_100_at_a_time_takes_three_pages_with_no_gap_or_repeat(
    make_client, sim
):
    sim.seed_batches(count=250, status="completed")
    client = make_client()

    pages, after = [], None
    for _ in range(10):  # bounded: three pages are expected
        page = client.list_batches(after=after, limit=100)
        pages.append(page)
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]

    assert [len(p["data"]) for p in pages] == [100, 100, 50]
    ids = [b["id"] for p in pages for b in p["data"]]
    assert len(set(ids)) == 250
    created = [b["created_at"] for p in pages for b in p["data"]]
    assert created == sorted(created, reverse=True)  # newest first across pages
    assert calls(sim, "listBatches") == 3


def test_a_running_batch_cancelled_over_http_goes_cancelling_then_cancelled(make_client, sim):
    seeded = sim.seed_batches(count=1, status="in_progress", requests=20)
    client = make_client()

    cancelling = client.cancel_batch(seeded["first_id"])
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelling_at"] is not None

    sim.advance(4)
    cancelled = client.retrieve_batch(seeded["first_id"])
    assert cancelled["status"] == "cancelled"
    assert calls(sim, "cancelBatch") == 1


def test_a_wrong_key_is_an_auth_error_that_does_not_echo_the_key(make_client, sim):
    client = make_client(api_key="sk-wrong-key")

    with pytest.raises(AuthError) as caught:
        client.list_batches()

    assert caught.value.status == 401
    assert caught.value.request_id.startswith("req_")
    assert "sk-wrong-key" not in str(caught.value)
    assert calls(sim, "listBatches") == 1  # a refused key is not retried


def test_an_unknown_batch_is_not_found(make_client, sim):
    with pytest.raises(NotFound) as caught:
        make_client().retrieve_batch("batch_doesnotexist")

    assert caught.value.status == 404
    assert "batch_doesnotexist" in str(caught.value)
    assert calls(sim, "retrieveBatch") == 1


def test_cancelling_a_completed_batch_is_a_conflict_and_leaves_it_completed(make_client, sim):
    seeded = sim.seed_batches(count=1, status="completed")
    client = make_client()

    with pytest.raises(InvalidRequest) as caught:
        client.cancel_batch(seeded["first_id"])

    assert caught.value.status == 409
    assert caught.value.code == "batch_not_cancellable"
    assert client.retrieve_batch(seeded["first_id"])["status"] == "completed"


def test_a_create_naming_an_unknown_input_file_is_refused_and_creates_nothing(make_client, sim):
    with pytest.raises(NotFound) as caught:
        make_client().create_batch(input_file_id="file-doesnotexist", endpoint=ENDPOINT)

    assert caught.value.status == 404  # the simulator answers 404 for an unknown file id
    assert "file-doesnotexist" in str(caught.value)
    assert sim.state()["batches"] == 0
    assert calls(sim, "createBatch") == 1


def test_a_create_with_a_bad_window_is_an_invalid_request_and_creates_nothing(
    make_client, sim, uploaded_file_id
):
    with pytest.raises(InvalidRequest) as caught:
        make_client().create_batch(
            input_file_id=uploaded_file_id, endpoint=ENDPOINT, completion_window="48h"
        )

    assert caught.value.status == 400
    assert caught.value.code == "invalid_value"
    assert caught.value.ambiguous is False
    assert sim.state()["batches"] == 0
    assert calls(sim, "createBatch") == 1


def test_a_429_is_retried_after_the_wait_the_server_asks_for(make_client, sim, waits):
    sim.seed_batches(count=2, status="completed")
    sim.set_faults({"rate_limit": 1, "retry_after": 3})

    page = make_client().list_batches(limit=10)

    assert len(page["data"]) == 2
    assert waits == [3.0]
    assert calls(sim, "listBatches") == 2


def test_two_500s_are_retried_with_backoff_and_the_third_try_succeeds(make_client, sim, waits):
    seeded = sim.seed_batches(count=1, status="completed")
    sim.set_faults({"server_error": 2})

    batch = make_client().retrieve_batch(seeded["first_id"])

    assert batch["id"] == seeded["first_id"]
    assert calls(sim, "retrieveBatch") == 3
    assert len(waits) == 2
    assert 0.375 <= waits[0] <= 0.5 and 0.75 <= waits[1] <= 1.0  # 0.5 s doubling, 25 % jitter


def test_a_500_on_create_is_not_retried_and_is_flagged_ambiguous(
    make_client, sim, uploaded_file_id
):
    sim.set_faults({"server_error": 1})

    with pytest.raises(UpstreamUnavailable) as caught:
        make_client().create_batch(input_file_id=uploaded_file_id, endpoint=ENDPOINT)

    assert caught.value.status == 500
    assert caught.value.ambiguous is True
    assert calls(sim, "createBatch") == 1


def test_a_truncated_json_answer_is_a_bad_response(make_client, sim):
    seeded = sim.seed_batches(count=1, status="completed")
    sim.set_faults({"malformed": 1})
    client = make_client()

    with pytest.raises(BadResponse) as caught:
        client.retrieve_batch(seeded["first_id"])

    assert caught.value.status == 200
    assert caught.value.request_id.startswith("req_")
    # The fault was consumed: the next answer is a good one.
    assert client.retrieve_batch(seeded["first_id"])["status"] == "completed"


def test_an_answer_slower_than_the_read_timeout_is_upstream_unavailable(make_client, sim):
    sim.set_faults({"latency": 1})
    client: OpenAIClient = make_client(read_timeout=0.2, max_retries=0)

    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        client.list_batches()
    elapsed = time.monotonic() - started

    assert elapsed < 0.9  # gave up at the read timeout, did not wait for the answer
    assert "read 0.2 s" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert calls(sim, "listBatches") == 1
