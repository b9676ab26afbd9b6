"""Capacity: the estimate of enqueued tokens per connection and model, and the worker that
submits a batch again once that estimate leaves room for it (services/capacity.py)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.utils import timezone
from responses import matchers

from batches.errors import ServiceError
from batches.models import (
    Batch,
    CapacityLimit,
    CapacityWait,
    Connection,
    Event,
    Submission,
    default_connection,
)
from batches.services import capacity as cap
from batches.services.batches import batch_upsert
from batches.services.sync import sync_pass
from tests.conftest import make_batch, make_list

pytestmark = pytest.mark.django_db

API = settings.OPENAI_BASE_URL
MODEL = "gpt-4o-mini"
LIMIT_MESSAGE = (
    "Enqueued token limit reached for gpt-4o-mini in organization org-x. Limit: 5,000 enqueued "
    "tokens. Please try again once some in_progress batches have been completed."
)


# --- Helpers --------------------------------------------------------------------------------


def cached(
    openai_id: str,
    *,
    status: str = "in_progress",
    model: str = f"{MODEL}-2024-07-18",
    tokens: int | None = None,
    connection: Connection | None = None,
    user: User | None = None,
    **payload: Any,
) -> Batch:
    """A batch in the cache; `tokens` is the input estimate batchweb's file check made (a
    batch without one was made outside batchweb)."""
    batch = batch_upsert(
        payload=make_batch(id=openai_id, status=status, model=model, **payload),
        connection=connection,
    ).batch
    if tokens is not None:
        Submission.objects.create(
            token=f"tok-{openai_id}",
            user=user,
            connection=batch.connection,
            state=Submission.State.DONE,
            batch=batch,
            filename=f"{openai_id}.jsonl",
            facts={"model": MODEL, "estimated_input_tokens": tokens, "lines": 3, "bytes": 900},
            request={"endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
    return batch


def failed_for_room(openai_id: str = "batch_full", *, tokens: int | None = 3000, user=None):
    return cached(
        openai_id,
        status="failed",
        tokens=tokens,
        user=user,
        input_file_id="file-full",
        in_progress_at=None,
        failed_at=1764000100,
        usage=None,
        request_counts={"total": 0, "completed": 0, "failed": 0},
        metadata={"job": "nightly"},
        errors={
            "object": "list",
            "data": [{"code": "token_limit_exceeded", "message": LIMIT_MESSAGE, "param": None}],
        },
    )


def limit(tokens: int, *, model: str = MODEL, connection: Connection | None = None):
    return CapacityLimit.objects.create(
        connection=connection or default_connection(), model=model, enqueued_tokens=tokens
    )


def finish(batch: Batch) -> None:
    batch_upsert(
        payload={**batch.raw, "status": "completed", "completed_at": 1764003000},
        connection=batch.connection,
    )


def created(openai_id: str, token: str, *, username: str = "sam") -> dict[str, Any]:
    return make_batch(
        id=openai_id,
        status="validating",
        in_progress_at=None,
        input_file_id="file-full",
        model=f"{MODEL}-2024-07-18",
        usage=None,
        request_counts={"total": 0, "completed": 0, "failed": 0},
        metadata={"job": "nightly", "batchweb_token": token, "batchweb_user": username},
    )


def creates(upstream) -> list[dict[str, Any]]:
    return [
        json.loads(c.request.body)
        for c in upstream.calls
        if c.request.method == "POST" and c.request.url == f"{API}/batches"
    ]


def actions(**filters: Any) -> list[str]:
    return list(
        Event.objects.filter(**filters).order_by("at", "id").values_list("action", flat=True)
    )


@pytest.fixture
def now() -> dt.datetime:
    return timezone.now()


# --- The estimate ---------------------------------------------------------------------------


def test_the_estimate_sums_the_unfinished_batches_of_one_connection_and_model(db):
    other = Connection.objects.create(slug="azure-eu", name="Azure EU", base_url="https://x.test")
    cached("batch_a", tokens=1000)
    cached("batch_b", tokens=2500, status="validating")
    cached("batch_c", tokens=400, status="finalizing", model=MODEL)  # undated name: same model
    cached("batch_done", tokens=9999, status="completed")  # finished: no longer counts
    cached("batch_other_model", tokens=7777, model="gpt-4.1-2025-04-14")
    cached("batch_other_conn", tokens=5555, connection=other)

    enqueued = cap.enqueued_estimate(connection=default_connection(), model=MODEL)

    assert enqueued == cap.Enqueued(tokens=3900, batches=3, unknown=0)
    assert not enqueued.is_lower_bound
    assert cap.enqueued_estimate(connection=other, model=MODEL).tokens == 5555


def test_batches_made_elsewhere_make_the_estimate_a_lower_bound_and_it_says_so(db):
    cached("batch_mine", tokens=1000)
    cached("batch_theirs")  # no file check: size unknown

    check = cap.capacity_for(connection=default_connection(), model=MODEL)

    assert check.enqueued == cap.Enqueued(tokens=1000, batches=2, unknown=1)
    assert check.enqueued_text() == (
        "at least 1,000 tokens in 2 unfinished batches (1 of them made outside batchweb, of "
        "unknown size, so the real figure is higher)"
    )


def test_room_is_the_limit_less_the_estimate(db):
    cached("batch_a", tokens=4000)
    limit(10_000, model="gpt-4o-mini-2024-07-18")  # a dated name matches its model too

    fits = cap.capacity_for(connection=default_connection(), model=MODEL, needed=6000)
    too_big = cap.capacity_for(connection=default_connection(), model=MODEL, needed=6001)
    never = cap.capacity_for(connection=default_connection(), model=MODEL, needed=10_001)

    assert (fits.limit, fits.free, fits.fits, fits.percent_used) == (10_000, 6000, True, 40)
    assert too_big.fits is False and not too_big.over_limit
    assert never.over_limit
    assert "Limit 10,000 tokens" in fits.summary() and "about 6,000 free" in fits.summary()


def test_without_a_limit_nothing_fits_or_fails_and_the_summary_says_no_limit_is_set(db):
    cached("batch_a", tokens=4000)

    check = cap.capacity_for(connection=default_connection(), model=MODEL, needed=10)

    assert check.limit is None and check.fits is None and check.free is None
    assert not check.may_submit()  # the worker waits for an empty queue instead
    assert "No enqueued-token limit is set for gpt-4o-mini on OpenAI" in check.summary()


def test_a_failure_for_lack_of_room_is_recognised_from_the_batch_errors(db):
    full = failed_for_room()
    other = cached(
        "batch_bad_json",
        status="failed",
        errors={"object": "list", "data": [{"code": "invalid_json_line", "message": "bad"}]},
    )

    assert cap.failed_for_lack_of_room(full)
    assert not cap.failed_for_lack_of_room(other)
    assert not cap.failed_for_lack_of_room(cached("batch_running", tokens=5))


# --- Queueing ---------------------------------------------------------------------------------


def test_queueing_a_failed_batch_stages_the_same_input_file_and_audits_it(submitter):
    full = failed_for_room(tokens=3000)
    limit(5000)
    cached("batch_blocking", tokens=4000)

    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)

    assert (wait.state, wait.model, wait.tokens_needed, wait.user) == (
        CapacityWait.State.WAITING,
        MODEL,
        3000,
        submitter,
    )
    staged = wait.submission
    assert (staged.state, staged.uploaded_file_id, staged.retry_of) == (
        "checked",
        "file-full",
        full,
    )
    assert staged.request["metadata"] == {"job": "nightly"}  # batchweb's own keys are new
    assert staged.facts["estimated_input_tokens"] == 3000
    (event,) = Event.objects.filter(action=Event.Action.CAPACITY_WAIT)
    assert (event.user, event.batch, event.outcome) == (submitter, full, "ok")
    assert "needs about 3,000 input tokens of gpt-4o-mini" in event.detail
    assert "about 1,000 free" in event.detail
    # Pressing twice waits once.
    assert cap.capacity_wait_for_batch(batch=full, user=submitter) == wait
    assert CapacityWait.objects.count() == 1


def test_the_model_comes_from_the_error_message_when_the_batch_names_none(submitter):
    full = failed_for_room(tokens=None)
    Batch.objects.filter(pk=full.pk).update(model="")
    full.refresh_from_db()

    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)

    assert (wait.model, wait.tokens_needed) == (MODEL, None)
    assert "needs an unknown number of input tokens of gpt-4o-mini" in (
        Event.objects.get(action=Event.Action.CAPACITY_WAIT).detail
    )


def test_a_batch_of_an_unknown_model_cannot_wait(submitter):
    full = failed_for_room(tokens=None)
    Batch.objects.filter(pk=full.pk).update(
        model="", errors={"data": [{"code": "token_limit_exceeded"}]}
    )
    full.refresh_from_db()

    with pytest.raises(ServiceError, match="does not know which model"):
        cap.capacity_wait_for_batch(batch=full, user=submitter)


def test_only_a_batch_that_failed_for_lack_of_room_can_wait(submitter):
    done = cached("batch_done", status="completed", tokens=10)

    with pytest.raises(ServiceError, match="token queue was full"):
        cap.capacity_wait_for_batch(batch=done, user=submitter)
    assert not CapacityWait.objects.exists()


# --- The worker -------------------------------------------------------------------------------


def test_the_worker_waits_while_there_is_no_room_and_submits_once_there_is(
    submitter, upstream, now
):
    full = failed_for_room(tokens=3000)
    blocking = cached("batch_blocking", tokens=4000)
    limit(5000)
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    token = wait.submission.token

    first = cap.capacity_waits_due(connection=default_connection(), now=now)

    assert (first.submitted, first.waiting) == (0, 1)
    assert creates(upstream) == []
    wait.refresh_from_db()
    assert (wait.state, wait.room) == (CapacityWait.State.WAITING, 1000)

    finish(blocking)  # 4,000 tokens leave the queue: 5,000 free, 3,000 needed
    upstream.post(
        f"{API}/batches",
        json=created("batch_again", token),
        match=[
            matchers.json_params_matcher(
                {
                    "input_file_id": "file-full",
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                    "metadata": {"job": "nightly", "batchweb_token": token, "batchweb_user": "sam"},
                }
            )
        ],
    )

    second = cap.capacity_waits_due(connection=default_connection(), now=now)

    assert second.submitted == 1
    assert len(creates(upstream)) == 1
    wait.refresh_from_db()
    again = Batch.objects.get(openai_id="batch_again")
    assert (wait.state, wait.new_batch) == (CapacityWait.State.SUBMITTED, again)
    assert (again.retry_of, again.created_by, again.submission_token) == (full, submitter, token)
    # The new batch counts in the estimate with the size its original was checked at.
    assert cap.enqueued_estimate(connection=default_connection(), model=MODEL).tokens == 3000
    assert actions(batch=full) == ["capacity_wait", "capacity_submit"]
    submitted = Event.objects.get(action=Event.Action.CAPACITY_SUBMIT)
    assert submitted.user is None  # the worker, shown as "batchweb"
    assert (
        submitted.detail
        == "as batch_again (needs about 3,000 input tokens of gpt-4o-mini, 5,000 free)"
    )
    assert actions(batch=again) == ["create"]
    assert Event.objects.get(action="create").user == submitter

    # Nothing is submitted twice.
    cap.capacity_waits_due(connection=default_connection(), now=now)
    assert len(creates(upstream)) == 1


def test_the_worker_step_is_part_of_each_sync_pass(submitter, upstream, now):
    full = failed_for_room(tokens=3000)
    blocking = cached("batch_blocking", tokens=4000)
    limit(5000)
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    Batch.objects.update(next_refresh_at=now + dt.timedelta(hours=1))  # no refreshes here
    upstream.get(f"{API}/batches", json=make_list([blocking.raw, full.raw]))

    sync_pass(connection=default_connection(), now=now)

    assert creates(upstream) == []
    finished = {**blocking.raw, "status": "completed", "completed_at": 1764003000}
    upstream.replace("GET", f"{API}/batches", json=make_list([finished, full.raw]))
    upstream.post(f"{API}/batches", json=created("batch_again", wait.submission.token))

    result = sync_pass(connection=default_connection(), now=now)

    assert len(creates(upstream)) == 1
    assert "capacity: 1 resubmitted" in str(result)
    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.SUBMITTED


def test_without_a_limit_the_worker_waits_for_an_empty_queue(submitter, upstream, now):
    full = failed_for_room(tokens=3000)
    blocking = cached("batch_blocking")  # made elsewhere, size unknown
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)

    cap.capacity_waits_due(connection=default_connection(), now=now)
    assert creates(upstream) == []

    finish(blocking)
    upstream.post(f"{API}/batches", json=created("batch_again", wait.submission.token))
    cap.capacity_waits_due(connection=default_connection(), now=now)

    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.SUBMITTED
    assert len(creates(upstream)) == 1


def test_a_batch_larger_than_the_whole_limit_is_given_up_with_the_reason(submitter, upstream, now):
    full = failed_for_room(tokens=3000)
    limit(2000)
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)

    result = cap.capacity_waits_due(connection=default_connection(), now=now)

    assert result.gave_up == 1 and creates(upstream) == []
    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.GAVE_UP
    assert wait.reason == (
        "it needs about 3,000 tokens, more than the whole limit of 2,000 for gpt-4o-mini: "
        "split the file into smaller batches"
    )
    event = Event.objects.get(action=Event.Action.CAPACITY_GAVE_UP)
    assert (event.batch, event.outcome) == (full, "failed")
    assert event.detail == f"Gave up: {wait.reason}."


def test_a_create_refused_again_for_lack_of_room_keeps_waiting_trying_less_often(
    submitter, upstream, now
):
    # The estimate left room (a batch made elsewhere was bigger than it knew); upstream did not.
    full = failed_for_room(tokens=3000)
    limit(5000)
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    refusal = {"error": {"message": LIMIT_MESSAGE, "type": "invalid_request_error",
                         "code": "token_limit_exceeded", "param": None}}  # fmt: skip
    upstream.post(f"{API}/batches", status=400, json=refusal)
    upstream.get(f"{API}/batches", json=make_list([]))  # the look for the token before a retry
    at = now
    for attempt in range(1, cap.MAX_ATTEMPTS + 3):
        cap.capacity_waits_due(connection=default_connection(), now=at)
        wait.refresh_from_db()
        assert (wait.state, wait.attempts) == (CapacityWait.State.WAITING, attempt)
        assert "Enqueued token limit reached" in wait.reason
        assert wait.not_before == at + cap.retry_delay(attempt)
        # Not tried again before then.
        early = wait.not_before - dt.timedelta(seconds=1)
        cap.capacity_waits_due(connection=default_connection(), now=early)
        assert len(creates(upstream)) == attempt
        at = wait.not_before

    assert [cap.retry_delay(n).total_seconds() for n in (1, 2, 3, 6, 7)] == [
        60,
        120,
        240,
        1800,
        1800,
    ]
    assert Event.objects.filter(action="create_failed").count() == cap.MAX_ATTEMPTS + 2
    assert actions(action__startswith="capacity") == ["capacity_wait"]  # still waiting


def test_upstream_faults_are_tried_again_a_few_times_then_given_up(
    submitter, upstream, now, no_sleep
):
    full = failed_for_room(tokens=3000)
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    upstream.post(f"{API}/batches", status=503, json={"error": {"message": "overloaded"}})
    upstream.get(f"{API}/batches", json=make_list([]))
    at = now
    for attempt in range(1, cap.MAX_ATTEMPTS):
        cap.capacity_waits_due(connection=default_connection(), now=at)
        wait.refresh_from_db()
        assert (wait.state, wait.attempts) == (CapacityWait.State.WAITING, attempt)
        at = wait.not_before

    cap.capacity_waits_due(connection=default_connection(), now=at)

    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.GAVE_UP
    assert wait.reason.startswith("the provider refused to create it: ")
    assert "HTTP 503" in wait.reason
    assert actions(action__startswith="capacity") == ["capacity_wait", "capacity_gave_up"]


def test_an_input_file_that_is_gone_ends_the_wait_at_once(submitter, upstream, now):
    full = failed_for_room(tokens=3000)
    limit(5000)
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    upstream.post(
        f"{API}/batches",
        status=400,
        json={"error": {"message": "Invalid 'input_file_id': 'file-full'. File not found.",
                        "type": "invalid_request_error", "code": None,
                        "param": "input_file_id"}},
    )  # fmt: skip

    cap.capacity_waits_due(connection=default_connection(), now=now)

    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.GAVE_UP
    assert "File not found" in wait.reason
    assert "Traceback" not in wait.reason


def test_a_create_that_timed_out_is_found_by_its_token_and_not_created_twice(
    submitter, upstream, now, no_sleep
):
    full = failed_for_room(tokens=3000)
    limit(5000)
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    token = wait.submission.token
    upstream.post(f"{API}/batches", body=requests.ConnectionError("reset"))
    # Right after the failure the token is not in the list yet; the next pass finds it.
    upstream.get(f"{API}/batches", json=make_list([]))

    cap.capacity_waits_due(connection=default_connection(), now=now)

    wait.refresh_from_db()
    assert (wait.state, wait.attempts) == (CapacityWait.State.WAITING, 1)
    sent = len(creates(upstream))
    upstream.replace("GET", f"{API}/batches", json=make_list([created("batch_late", token)]))

    cap.capacity_waits_due(connection=default_connection(), now=wait.not_before)

    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.SUBMITTED
    assert wait.new_batch.openai_id == "batch_late"
    assert len(creates(upstream)) == sent  # found, not created again


def test_a_cancelled_wait_is_never_submitted(submitter, upstream, now):
    full = failed_for_room(tokens=3000)
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)

    cap.capacity_wait_cancel(wait=wait, user=submitter)
    cap.capacity_waits_due(connection=default_connection(), now=now)  # room: empty queue

    wait.refresh_from_db()
    assert (wait.state, wait.reason) == (CapacityWait.State.CANCELLED, "cancelled by sam")
    assert creates(upstream) == []
    assert actions(batch=full) == ["capacity_wait", "capacity_cancel"]
    with pytest.raises(ServiceError, match="no longer waiting"):
        cap.capacity_wait_cancel(wait=wait, user=submitter)


def test_only_the_owner_or_an_operator_may_cancel(submitter, operator, viewer):
    wait = cap.capacity_wait_for_batch(batch=failed_for_room(), user=submitter)
    other = User.objects.create_user("sue", password="pw-sue-123")
    other.groups.add(Group.objects.get(name="Submitters"))

    assert wait.may_cancel(submitter) and wait.may_cancel(operator)
    assert not wait.may_cancel(other) and not wait.may_cancel(viewer)


def test_a_wait_whose_owner_may_no_longer_submit_is_given_up(submitter, upstream, now):
    wait = cap.capacity_wait_for_batch(batch=failed_for_room(), user=submitter)
    submitter.groups.clear()

    cap.capacity_waits_due(connection=default_connection(), now=now)

    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.GAVE_UP
    assert wait.reason == "sam may no longer submit batches on OpenAI"
    assert creates(upstream) == []


def test_a_wait_of_more_than_a_week_is_given_up(submitter, upstream, now):
    wait = cap.capacity_wait_for_batch(batch=failed_for_room(), user=submitter)
    cached("batch_blocking", tokens=1)

    cap.capacity_waits_due(connection=default_connection(), now=now + dt.timedelta(days=8))

    wait.refresh_from_db()
    assert (wait.state, wait.reason) == (CapacityWait.State.GAVE_UP, "there was no room for 7 days")


def test_waits_are_submitted_oldest_first_and_only_as_far_as_the_room_goes(
    submitter, upstream, now
):
    limit(5000)
    first = cap.capacity_wait_for_batch(
        batch=failed_for_room("batch_f1", tokens=3000), user=submitter
    )
    second = cap.capacity_wait_for_batch(
        batch=failed_for_room("batch_f2", tokens=3000), user=submitter
    )
    upstream.post(f"{API}/batches", json=created("batch_again1", first.submission.token))

    cap.capacity_waits_due(connection=default_connection(), now=now)

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == CapacityWait.State.SUBMITTED
    # The first one's 3,000 tokens are now enqueued: 2,000 free, not enough for the second.
    assert (second.state, second.room) == (CapacityWait.State.WAITING, 2000)
    assert len(creates(upstream)) == 1


def test_a_create_refused_with_a_400_waits_and_is_created_from_the_uploaded_file(
    submitter, upstream, now
):
    explanation = cap._REFUSED_SENTENCE
    submission = Submission.objects.create(
        token="tok-refused",
        user=submitter,
        connection=default_connection(),
        state=Submission.State.FAILED,
        filename="in.jsonl",
        uploaded_file_id="file-full",
        facts={"model": MODEL, "estimated_input_tokens": 3000, "lines": 3, "bytes": 900},
        request={"endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {}},
        error=f"The OpenAI API rejected the request (HTTP 400): {LIMIT_MESSAGE} {explanation}",
    )
    assert cap.refused_for_lack_of_room(submission)
    blocking = cached("batch_blocking", tokens=4000)
    limit(5000)
    wait = cap.capacity_wait_for_submission(submission=submission, user=submitter)
    cap.capacity_waits_due(connection=default_connection(), now=now)
    assert creates(upstream) == []

    finish(blocking)
    upstream.get(f"{API}/batches", json=make_list([]))  # tried before: look for the token first
    upstream.post(f"{API}/batches", json=created("batch_now", "tok-refused"))
    cap.capacity_waits_due(connection=default_connection(), now=now)

    wait.refresh_from_db()
    submission.refresh_from_db()
    assert wait.state == CapacityWait.State.SUBMITTED
    assert (submission.state, submission.batch) == ("done", wait.new_batch)
    paths = [(c.request.method, c.request.path_url.split("?")[0]) for c in upstream.calls]
    assert paths == [("GET", "/v1/batches"), ("POST", "/v1/batches")]  # no second upload
    assert creates(upstream)[0]["input_file_id"] == "file-full"
    event = Event.objects.get(action=Event.Action.CAPACITY_SUBMIT)
    assert (event.batch, event.target) == (wait.new_batch, "batch_now")


def test_a_batch_that_names_no_model_counts_under_the_model_its_file_named(db):
    # Azure's batches carry no `model`; the file check read it from the lines.
    azure = cached("batch_azure", tokens=1500)
    Batch.objects.filter(pk=azure.pk).update(model="")
    cached("batch_blank_elsewhere", model="")  # no model, no file check: cannot be placed

    assert cap.enqueued_estimate(connection=default_connection(), model=MODEL).tokens == 1500
    rows = cap.connection_capacity(connection=default_connection())
    assert [(r.model, r.enqueued.tokens) for r in rows] == [(MODEL, 1500)]
