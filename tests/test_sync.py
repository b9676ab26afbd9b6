"""Services that walk upstream: `batches_sync`, the running-batch refresh, and the create call's
reconciliation after an ambiguous failure."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.conf import settings
from responses import matchers

from batches.models import Batch, Event, Status, SyncState, default_connection
from batches.openai_client import InvalidRequest, NotFound, UpstreamUnavailable
from batches.services.batches import batch_create, batch_upsert
from batches.services.sync import batches_sync
from tests.conftest import make_batch, make_list

API = settings.OPENAI_BASE_URL
LIST_URL = f"{API}/batches"

pytestmark = pytest.mark.django_db


def done(batch_id: str, **overrides) -> dict:
    """A finished batch: the sync will not refresh it afterwards."""
    return make_batch(id=batch_id, status="completed", **overrides)


def page_of(*ids: str, has_more: bool) -> dict:
    return make_list([done(i) for i in ids], has_more=has_more)


def list_params(upstream: responses.RequestsMock) -> list[dict[str, str]]:
    return [
        dict(c.request.params) for c in upstream.calls if c.request.url.split("?")[0] == LIST_URL
    ]


def error_body(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


# --- Walking the list ---------------------------------------------------------------------------


def test_it_walks_three_pages_with_the_last_id_of_each_as_the_cursor(upstream, no_sleep):
    upstream.get(
        LIST_URL,
        json=page_of("batch_9", "batch_8", has_more=True),
        match=[matchers.query_param_matcher({"limit": "100"})],
    )
    upstream.get(
        LIST_URL,
        json=page_of("batch_7", "batch_6", has_more=True),
        match=[matchers.query_param_matcher({"limit": "100", "after": "batch_8"})],
    )
    upstream.get(
        LIST_URL,
        json=page_of("batch_5", has_more=False),
        match=[matchers.query_param_matcher({"limit": "100", "after": "batch_6"})],
    )

    result = batches_sync(connection=default_connection())

    assert list_params(upstream) == [
        {"limit": "100"},
        {"limit": "100", "after": "batch_8"},
        {"limit": "100", "after": "batch_6"},
    ]
    assert (result.pages, result.seen, result.created) == (3, 5, 5)
    assert result.stopped_because == "last page"
    assert Batch.objects.count() == 5


def test_it_stops_on_an_empty_page_even_if_more_is_promised(upstream, no_sleep):
    upstream.get(LIST_URL, json=page_of("batch_2", "batch_1", has_more=True))
    upstream.get(LIST_URL, json=make_list([], has_more=True))

    result = batches_sync(connection=default_connection(), full=True)

    assert result.pages == 2
    assert result.stopped_because == "empty page"
    assert Batch.objects.count() == 2


def test_it_stops_when_the_server_repeats_a_cursor(upstream, no_sleep):
    # A server that ignores `after` answers the same page forever.
    upstream.get(LIST_URL, json=page_of("batch_2", "batch_1", has_more=True))

    result = batches_sync(connection=default_connection(), full=True)

    assert list_params(upstream) == [{"limit": "100"}, {"limit": "100", "after": "batch_1"}]
    assert result.stopped_because == "repeated cursor"
    assert Batch.objects.count() == 2


def test_it_stops_at_the_page_cap_when_has_more_never_turns_false(upstream, no_sleep):
    def endless(request):
        after = parse_qs(urlsplit(request.url).query).get("after", ["batch_0"])[0]
        n = int(after.removeprefix("batch_")) + 1
        return 200, {}, json.dumps(page_of(f"batch_{n}", has_more=True))

    upstream.add_callback(responses.GET, LIST_URL, callback=endless)

    result = batches_sync(connection=default_connection(), full=True, max_pages=5)

    assert result.pages == 5
    assert len(list_params(upstream)) == 5
    assert result.stopped_because == "page cap of 5 reached"
    assert Batch.objects.count() == 5


def test_the_page_cap_comes_from_the_settings(upstream, settings, no_sleep):
    settings.SYNC_MAX_PAGES = 2
    upstream.get(LIST_URL, json=page_of("batch_2", has_more=True))
    upstream.get(LIST_URL, json=page_of("batch_1", has_more=True))

    result = batches_sync(connection=default_connection(), full=True)

    assert result.pages == 2
    assert result.stopped_because == "page cap of 2 reached"


def test_an_incremental_sync_stops_at_the_first_page_with_nothing_new(upstream, no_sleep):
    pages = [
        page_of("batch_4", "batch_3", has_more=True),
        page_of("batch_2", "batch_1", has_more=True),
        page_of("batch_0", has_more=False),
    ]
    for page in pages:
        upstream.get(LIST_URL, json=page)
    batches_sync(connection=default_connection(), full=True)
    upstream.get_registry().reset()
    upstream.calls.reset()
    for page in pages:
        upstream.get(LIST_URL, json=page)

    result = batches_sync(connection=default_connection())

    assert list_params(upstream) == [{"limit": "100"}]
    assert result.stopped_because == "nothing new"
    assert (result.created, result.updated) == (0, 0)


def test_an_incremental_sync_goes_on_while_pages_bring_news(upstream, no_sleep):
    upstream.get(LIST_URL, json=page_of("batch_2", "batch_1", has_more=False))
    batches_sync(connection=default_connection())
    upstream.calls.reset()
    upstream.get(LIST_URL, json=page_of("batch_4", "batch_3", has_more=True))
    upstream.get(LIST_URL, json=page_of("batch_2", "batch_1", has_more=True))

    result = batches_sync(connection=default_connection())

    assert list_params(upstream) == [{"limit": "100"}, {"limit": "100", "after": "batch_3"}]
    assert result.stopped_because == "nothing new"
    assert (result.pages, result.created) == (2, 2)


def test_a_changed_batch_counts_as_news(upstream, no_sleep):
    upstream.get(LIST_URL, json=page_of("batch_1", has_more=False))
    batches_sync(connection=default_connection())
    upstream.get(
        LIST_URL, json=make_list([done("batch_1", metadata={"job": "renamed"})], has_more=True)
    )
    upstream.get(LIST_URL, json=make_list([], has_more=False))

    result = batches_sync(connection=default_connection())

    assert (result.pages, result.updated, result.created) == (2, 1, 0)
    assert Batch.objects.get().label == "renamed"


def test_a_full_sync_walks_every_page_even_without_news(upstream, no_sleep):
    pages = [
        page_of("batch_3", has_more=True),
        page_of("batch_2", has_more=True),
        page_of("batch_1", has_more=False),
    ]
    for page in pages:
        upstream.get(LIST_URL, json=page)
    batches_sync(connection=default_connection(), full=True)
    upstream.get_registry().reset()
    upstream.calls.reset()
    for page in pages:
        upstream.get(LIST_URL, json=page)

    result = batches_sync(connection=default_connection(), full=True)

    assert len(list_params(upstream)) == 3
    assert result.stopped_because == "last page"
    assert SyncState.get(default_connection()).last_full_sync_at is not None


def test_it_skips_list_items_that_are_not_batches(upstream, no_sleep):
    page = page_of("batch_1", has_more=False)
    page["data"] += [None, "batch_x", {"object": "batch"}]
    upstream.get(LIST_URL, json=page)

    result = batches_sync(connection=default_connection())

    assert result.seen == 1
    assert list(Batch.objects.values_list("openai_id", flat=True)) == ["batch_1"]


# --- Refreshing running batches ----------------------------------------------------------------


def test_it_refreshes_running_batches_one_by_one_after_the_walk(upstream, no_sleep):
    upstream.get(
        LIST_URL,
        json=make_list(
            [make_batch(id="batch_run", status="in_progress"), done("batch_old")], has_more=False
        ),
    )
    upstream.get(f"{API}/batches/batch_run", json=done("batch_run"))

    result = batches_sync(connection=default_connection())

    assert [c.request.url for c in upstream.calls] == [
        f"{LIST_URL}?limit=100",
        f"{API}/batches/batch_run",
    ]
    assert result.refreshed == 1
    assert Batch.objects.get(openai_id="batch_run").status == Status.COMPLETED


def test_it_also_refreshes_running_batches_the_walk_did_not_bring(upstream, no_sleep):
    batch_upsert(payload=make_batch(id="batch_run", status="in_progress"))
    upstream.get(LIST_URL, json=make_list([done("batch_old")], has_more=False))
    upstream.get(f"{API}/batches/batch_run", json=done("batch_run"))

    result = batches_sync(connection=default_connection())

    assert [c.request.url for c in upstream.calls] == [
        f"{LIST_URL}?limit=100",
        f"{API}/batches/batch_run",
    ]
    assert result.refreshed == 1
    assert Batch.objects.get(openai_id="batch_run").status == Status.COMPLETED


def test_it_does_not_refresh_when_asked_not_to(upstream, no_sleep):
    upstream.get(LIST_URL, json=make_list([make_batch(id="batch_run")], has_more=False))

    result = batches_sync(connection=default_connection(), refresh_running=False)

    assert result.refreshed == 0
    assert len(upstream.calls) == 1


def test_a_running_batch_upstream_forgot_gets_an_error_and_the_rest_go_on(upstream, no_sleep):
    upstream.get(
        LIST_URL,
        json=make_list(
            [
                make_batch(id="batch_gone", created_at=1764000000),
                make_batch(id="batch_here", created_at=1764000100),
            ],
            has_more=False,
        ),
    )
    upstream.get(
        f"{API}/batches/batch_gone",
        status=404,
        json={"error": {"message": "No such batch", "type": "invalid_request_error"}},
    )
    upstream.get(f"{API}/batches/batch_here", json=done("batch_here", created_at=1764000100))

    result = batches_sync(connection=default_connection())

    assert result.refreshed == 1
    gone = Batch.objects.get(openai_id="batch_gone")
    assert "No such batch" in gone.last_error
    assert Batch.objects.get(openai_id="batch_here").status == Status.COMPLETED


def test_a_running_batch_answered_without_status_gets_an_error_and_the_rest_go_on(
    upstream, no_sleep
):
    upstream.get(
        LIST_URL,
        json=make_list(
            [
                make_batch(id="batch_odd", created_at=1764000000),
                make_batch(id="batch_fine", created_at=1764000100),
            ],
            has_more=False,
        ),
    )
    odd = {key: value for key, value in make_batch(id="batch_odd").items() if key != "status"}
    upstream.get(f"{API}/batches/batch_odd", json=odd)
    upstream.get(f"{API}/batches/batch_fine", json=done("batch_fine", created_at=1764000100))

    result = batches_sync(connection=default_connection())

    assert result.refreshed == 1
    kept = Batch.objects.get(openai_id="batch_odd")
    assert kept.status == Status.IN_PROGRESS
    assert "not a batch" in kept.last_error
    assert Batch.objects.get(openai_id="batch_fine").status == Status.COMPLETED
    assert not SyncState.get(default_connection()).is_failing


# --- The sync state ---------------------------------------------------------------------------


def test_a_sync_records_its_success(upstream, no_sleep):
    upstream.get(LIST_URL, json=make_list([], has_more=False))

    batches_sync(connection=default_connection())

    state = SyncState.get(default_connection())
    assert state.last_success_at is not None
    assert state.last_sync_at == state.last_success_at
    assert state.last_full_sync_at is None
    assert not state.is_failing


def test_a_failed_sync_records_the_error_and_request_id(upstream, no_sleep):
    upstream.get(
        LIST_URL,
        status=503,
        json=error_body("The server is overloaded"),
        headers={"x-request-id": "req_503"},
    )

    with pytest.raises(UpstreamUnavailable):
        batches_sync(connection=default_connection())

    state = SyncState.get(default_connection())
    assert "The server is overloaded" in state.last_error
    assert "HTTP 503" in state.last_error
    assert state.last_error_request_id == "req_503"
    assert state.last_error_at is not None
    assert state.is_failing
    assert state.last_success_at is None
    assert len(no_sleep) == 2, "the list call was retried twice first"


def test_a_failure_on_a_later_page_keeps_the_pages_already_stored(upstream, no_sleep):
    upstream.get(LIST_URL, json=page_of("batch_2", has_more=True))
    upstream.get(LIST_URL, body=requests.exceptions.ReadTimeout())

    with pytest.raises(UpstreamUnavailable):
        batches_sync(connection=default_connection())

    assert Batch.objects.filter(openai_id="batch_2").exists()
    assert "within the time limit" in SyncState.get(default_connection()).last_error


def test_a_sync_after_a_failure_clears_the_failing_state(upstream, no_sleep):
    upstream.get(LIST_URL, status=500, json=error_body("boom"))
    with pytest.raises(UpstreamUnavailable):
        batches_sync(connection=default_connection())
    upstream.replace(responses.GET, LIST_URL, json=make_list([], has_more=False))

    batches_sync(connection=default_connection())

    state = SyncState.get(default_connection())
    assert not state.is_failing
    assert state.last_success_at is not None


# --- Create: never twice, never lost -------------------------------------------------------------


CREATE_ARGS = {"input_file_id": "file-in123", "endpoint": "/v1/chat/completions"}


def created(token: str, batch_id: str = "batch_new", user: str = "sam") -> dict:
    return make_batch(
        id=batch_id,
        status="validating",
        request_counts={"total": 0, "completed": 0, "failed": 0},
        metadata={"job": "x", "batchweb_token": token, "batchweb_user": user},
    )


def test_create_stamps_the_token_and_user_in_metadata(upstream, submitter, no_sleep):
    upstream.post(
        LIST_URL,
        json=created("tok-1"),
        match=[
            matchers.json_params_matcher(
                {
                    **CREATE_ARGS,
                    "completion_window": "24h",
                    "metadata": {"job": "x", "batchweb_token": "tok-1", "batchweb_user": "sam"},
                }
            )
        ],
    )

    batch = batch_create(
        user=submitter, metadata={"job": "x"}, submission_token="tok-1", **CREATE_ARGS
    )

    assert batch.openai_id == "batch_new"
    assert batch.created_by == submitter
    assert batch.submission_token == "tok-1"
    assert Event.objects.filter(action=Event.Action.CREATE, batch=batch).exists()


def test_create_finds_the_batch_after_a_timeout_and_does_not_post_again(
    upstream, submitter, no_sleep
):
    upstream.post(LIST_URL, body=requests.exceptions.ReadTimeout())
    upstream.get(
        LIST_URL,
        json=make_list([done("batch_other"), created("tok-2")], has_more=False),
        match=[matchers.query_param_matcher({"limit": "100"})],
    )

    batch = batch_create(
        user=submitter, metadata={"job": "x"}, submission_token="tok-2", **CREATE_ARGS
    )

    assert batch.openai_id == "batch_new"
    assert batch.submission_token == "tok-2"
    assert batch.created_by == submitter
    assert [c.request.method for c in upstream.calls] == ["POST", "GET"]
    assert Batch.objects.count() == 1
    assert not Event.objects.filter(action=Event.Action.CREATE_FAILED).exists()


def test_create_looks_on_later_pages_for_its_token(upstream, submitter, no_sleep):
    upstream.post(LIST_URL, status=502, json=error_body("bad gateway"))
    upstream.get(LIST_URL, json=page_of("batch_b", "batch_a", has_more=True))
    upstream.get(
        LIST_URL,
        json=make_list([created("tok-3")], has_more=False),
        match=[matchers.query_param_matcher({"limit": "100", "after": "batch_a"})],
    )

    batch = batch_create(user=submitter, submission_token="tok-3", **CREATE_ARGS)

    assert batch.openai_id == "batch_new"
    assert [c.request.method for c in upstream.calls] == ["POST", "GET", "GET"]


def test_create_raises_and_stores_nothing_when_the_token_is_not_found(
    upstream, submitter, no_sleep
):
    upstream.post(LIST_URL, body=requests.exceptions.ReadTimeout())
    upstream.get(LIST_URL, json=page_of("batch_other", has_more=False))

    with pytest.raises(UpstreamUnavailable, match="within the time limit"):
        batch_create(user=submitter, submission_token="tok-4", **CREATE_ARGS)

    assert [c.request.method for c in upstream.calls] == ["POST", "GET"]
    assert not Batch.objects.filter(submission_token="tok-4").exists()
    assert Batch.objects.filter(openai_id="batch_other").count() == 0
    failed = Event.objects.get(action=Event.Action.CREATE_FAILED)
    assert failed.user == submitter
    assert "within the time limit" in failed.detail


def test_create_raises_the_original_error_when_the_lookup_fails_too(upstream, submitter, no_sleep):
    upstream.post(LIST_URL, status=500, json=error_body("create exploded"))
    upstream.get(LIST_URL, status=500, json=error_body("list exploded"))

    with pytest.raises(UpstreamUnavailable, match="create exploded"):
        batch_create(user=submitter, submission_token="tok-5", **CREATE_ARGS)

    assert Batch.objects.count() == 0


def test_a_rejected_create_is_not_reconciled(upstream, submitter, no_sleep):
    upstream.post(
        LIST_URL,
        status=400,
        json={
            "error": {
                "message": "input_file_id is not a batch file",
                "type": "invalid_request_error",
            }
        },
    )

    with pytest.raises(InvalidRequest, match="not a batch file"):
        batch_create(user=submitter, submission_token="tok-6", **CREATE_ARGS)

    assert [c.request.method for c in upstream.calls] == ["POST"]
    assert Batch.objects.count() == 0


def test_a_create_with_a_known_token_returns_the_batch_without_calling_upstream(
    upstream, submitter, no_sleep
):
    upstream.post(LIST_URL, json=created("tok-7"))
    first = batch_create(user=submitter, submission_token="tok-7", **CREATE_ARGS)

    second = batch_create(user=submitter, submission_token="tok-7", **CREATE_ARGS)

    assert second == first
    assert len(upstream.calls) == 1


def test_a_create_already_seen_by_the_sync_is_not_created_again(upstream, submitter, no_sleep):
    # The create timed out; the sync worker stored the batch before the person pressed again.
    upstream.get(LIST_URL, json=make_list([created("tok-8")], has_more=False))
    upstream.get(f"{API}/batches/batch_new", json=created("tok-8"))
    batches_sync(connection=default_connection())
    upstream.calls.reset()

    batch = batch_create(user=submitter, submission_token="tok-8", **CREATE_ARGS)

    assert batch.openai_id == "batch_new"
    assert len(upstream.calls) == 0


def test_a_create_that_upstream_never_saw_is_retried_on_429(upstream, submitter, no_sleep):
    upstream.post(LIST_URL, status=429, json=error_body("slow down"), headers={"retry-after": "1"})
    upstream.post(LIST_URL, json=created("tok-9"))

    batch = batch_create(user=submitter, submission_token="tok-9", **CREATE_ARGS)

    assert batch.openai_id == "batch_new"
    assert no_sleep == [1.0]
    assert [c.request.method for c in upstream.calls] == ["POST", "POST"]


def test_a_refresh_of_a_forgotten_batch_raises_not_found(upstream, no_sleep):
    from batches.services.batches import batch_refresh

    upstream.get(LIST_URL, json=page_of("batch_1", has_more=False))
    batches_sync(connection=default_connection())
    upstream.get(f"{API}/batches/batch_1", status=404, json=error_body("gone"))

    with pytest.raises(NotFound):
        batch_refresh(batch=Batch.objects.get())
