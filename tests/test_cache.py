"""The local cache: `services.batch_upsert` and `Batch.apply_payload`.

Upstream payloads are accepted liberally (nulls, missing keys, unknown keys, odd ids and
timestamps) and an older payload never moves a cached batch back.
"""

from __future__ import annotations

import datetime as dt

import pytest

from batches.models import Batch, Status, unix_to_datetime
from batches.services.batches import batch_upsert
from tests.conftest import load_payload, make_batch

NOW = dt.datetime(2025, 11, 25, 12, 0, tzinfo=dt.UTC)
CREATED = dt.datetime(2025, 11, 24, 16, 0, tzinfo=dt.UTC)  # 1764000000


def counts(total: int, completed: int, failed: int) -> dict[str, int]:
    return {"total": total, "completed": completed, "failed": failed}


pytestmark = pytest.mark.django_db


# --- Reading payloads ---------------------------------------------------------------------------


def test_it_stores_every_known_field_of_a_full_payload():
    result = batch_upsert(payload=load_payload("batch_completed.json"), now=NOW)

    batch = Batch.objects.get(openai_id="batch_done456")
    assert result.created and result.changed and not result.stale
    assert batch.status == Status.COMPLETED
    assert batch.endpoint == "/v1/embeddings"
    assert batch.model == "text-embedding-3-small"
    assert batch.completion_window == "24h"
    assert (batch.input_file_id, batch.output_file_id, batch.error_file_id) == (
        "file-in456",
        "file-out456",
        "file-err456",
    )
    assert (batch.request_total, batch.request_completed, batch.request_failed) == (500, 497, 3)
    assert batch.input_tokens == 50000
    assert batch.cached_tokens == 1000
    assert batch.output_tokens == 0
    assert batch.reasoning_tokens == 0
    assert batch.total_tokens == 50000
    assert batch.metadata == {
        "batchweb_token": "tok-done456",
        "batchweb_user": "sam",
        "team": "search",
    }
    assert batch.submission_token == "tok-done456"
    assert batch.errors is None
    assert batch.synced_at == NOW
    assert batch.raw == load_payload("batch_completed.json")


def test_it_stores_timestamps_as_aware_utc_datetimes():
    batch_upsert(payload=load_payload("batch_completed.json"), now=NOW)

    batch = Batch.objects.get()
    assert batch.created_at == dt.datetime.fromtimestamp(1763990000, tz=dt.UTC)
    assert batch.created_at.tzinfo is not None
    assert batch.completed_at == dt.datetime.fromtimestamp(1763993100, tz=dt.UTC)
    assert batch.failed_at is None
    assert [step[0] for step in batch.timeline()] == [
        "created",
        "in progress",
        "finalizing",
        "completed",
    ]


def test_it_accepts_nulls_everywhere_optional():
    payload = make_batch(
        model=None,
        errors=None,
        output_file_id=None,
        error_file_id=None,
        in_progress_at=None,
        expires_at=None,
        request_counts=None,
        usage=None,
        metadata=None,
    )

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.model == ""
    assert batch.output_file_id == ""
    assert batch.in_progress_at is None
    assert batch.request_total is None
    assert batch.input_tokens is None
    assert batch.cached_tokens is None
    assert batch.metadata is None
    assert batch.errors is None
    assert batch.progress_percent() is None
    assert batch.label == ""


def test_it_accepts_nulls_inside_nested_objects():
    # Not schema-valid (the schema requires the nested keys): what a lax server sends.
    payload = make_batch()
    payload["request_counts"] = {"total": None, "completed": 3, "failed": None}
    payload["usage"] = {"input_tokens": 5, "input_tokens_details": None, "output_tokens": None}
    payload["metadata"] = {"job": None}

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert (batch.request_total, batch.request_completed, batch.request_failed) == (None, 3, None)
    assert batch.input_tokens == 5
    assert batch.cached_tokens is None
    assert batch.output_tokens is None
    assert batch.metadata == {"job": ""}


def test_it_accepts_a_gateway_payload_with_missing_keys_and_unknown_keys():
    payload = load_payload("batch_failed_minimal.json")

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.openai_id == "batch-gateway789"
    assert batch.status == Status.FAILED
    assert batch.model == ""
    assert batch.output_file_id == ""
    assert batch.request_total is None
    assert batch.metadata is None
    assert batch.failed_at == dt.datetime.fromtimestamp(1763980010, tz=dt.UTC)
    assert batch.raw["x_gateway_region"] == "eu-west"
    assert [e["code"] for e in batch.error_list()] == ["invalid_json_line", "mismatched_endpoint"]
    assert batch.error_list()[1]["line"] == 42


def test_it_keeps_the_whole_payload_with_unknown_keys_in_raw():
    payload = make_batch(x_future_field={"nested": [1, 2]}, priority="low")

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.raw == payload
    assert batch.raw["x_future_field"] == {"nested": [1, 2]}


def test_it_accepts_the_bare_minimum_of_a_batch():
    payload = {
        "id": "batch-min1",
        "object": "batch",
        "endpoint": "/v1/embeddings",
        "input_file_id": "file-1",
        "completion_window": "24h",
        "status": "validating",
        "created_at": 1764000000,
    }

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.status == Status.VALIDATING
    assert batch.created_at == CREATED
    assert batch.is_terminal is False


def test_it_reads_millisecond_timestamps():
    payload = make_batch(created_at=1764000000123, in_progress_at=1764000060000)

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.created_at == CREATED + dt.timedelta(milliseconds=123)
    assert batch.in_progress_at == CREATED + dt.timedelta(seconds=60)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1764000000, CREATED),
        (1764000000.5, CREATED + dt.timedelta(milliseconds=500)),
        ("1764000000", CREATED),
        (1764000000000, CREATED),
        (None, None),
        (0, None),
        (-5, None),
        (True, None),
        ("yesterday", None),
        ("", None),
        ([1764000000], None),
        ({"s": 1}, None),
        (float("nan"), None),
        (float("inf"), None),
        (10**30, None),
    ],
)
def test_it_turns_junk_timestamps_into_none(value, expected):
    assert unix_to_datetime(value) == expected


def test_a_junk_created_at_falls_back_to_now():
    payload = make_batch(in_progress_at=None)
    payload["created_at"] = "not a time"
    payload["expires_at"] = "later"

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.created_at == NOW
    assert batch.expires_at is None


def test_it_ignores_junk_counts_and_usage():
    payload = make_batch()
    payload["request_counts"] = {"total": "many", "completed": -1, "failed": True}
    payload["usage"] = ["not", "an", "object"]

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert (batch.request_total, batch.request_completed, batch.request_failed) == (
        None,
        None,
        None,
    )
    assert batch.total_tokens is None


def test_it_turns_metadata_values_into_strings():
    payload = make_batch()
    payload["metadata"] = {"job": "x", "n": 3, "flag": True}

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.metadata == {"job": "x", "n": "3", "flag": "True"}
    assert batch.label == "x"


def test_it_ignores_metadata_and_errors_of_the_wrong_shape():
    payload = make_batch()
    payload["metadata"] = "job=x"
    payload["errors"] = [{"code": "x"}]

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.metadata is None
    assert batch.errors is None
    assert batch.error_list() == []


def test_it_cuts_overlong_text_to_the_column_sizes():
    payload = make_batch(model="m" * 500, endpoint="/v1/" + "e" * 100)

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert len(batch.model) == 128
    assert len(batch.endpoint) == 64


def test_it_builds_lower_case_search_text_from_ids_files_model_and_metadata():
    payload = make_batch(
        id="batch_ABC",
        input_file_id="file-IN",
        output_file_id="file-Out",
        metadata={"Team": "Search", "job": "Nightly-Eval"},
    )

    batch = batch_upsert(payload=payload, now=NOW).batch

    assert batch.search_text.split("\n") == [
        "batch_abc",
        "file-in",
        "file-out",
        "gpt-4o-mini-2024-07-18",
        "team=search",
        "job=nightly-eval",
    ]
    assert list(Batch.objects.search("NIGHTLY")) == [batch]
    assert list(Batch.objects.search("team=search")) == [batch]
    assert list(Batch.objects.search("nothing-like-it")) == []


def test_it_links_the_creator_named_in_metadata(submitter):
    payload = make_batch(metadata={"batchweb_user": "sam", "batchweb_token": "tok-1"})

    batch = batch_upsert(payload=payload, now=NOW).batch

    batch.refresh_from_db()
    assert batch.created_by == submitter
    assert batch.creator_name() == "sam"
    assert batch.user_metadata() == {}


def test_it_keeps_the_creator_name_when_the_user_is_unknown(db):
    payload = make_batch(metadata={"batchweb_user": "ghost"})

    batch = batch_upsert(payload=payload, now=NOW).batch

    assert batch.created_by is None
    assert batch.creator_name() == "ghost"


def test_it_links_the_creator_on_a_later_update(db, django_user_model):
    batch_upsert(payload=make_batch(metadata={"batchweb_user": "late"}), now=NOW)
    user = django_user_model.objects.create_user("late")

    batch = batch_upsert(
        payload=make_batch(metadata={"batchweb_user": "late"}, status="finalizing"), now=NOW
    ).batch

    assert batch.created_by == user


def test_two_batches_carrying_the_same_token_are_both_stored():
    # Someone resubmitted by hand with the metadata of a batchweb batch: the token is not unique
    # upstream, so the second batch is cached without claiming it.
    first = batch_upsert(payload=make_batch(id="batch_1", metadata={"batchweb_token": "t"}))
    second = batch_upsert(payload=make_batch(id="batch_2", metadata={"batchweb_token": "t"}))
    again = batch_upsert(
        payload=make_batch(id="batch_2", metadata={"batchweb_token": "t"}, status="finalizing")
    )

    assert first.created and second.created
    assert again.changed
    assert Batch.objects.count() == 2
    assert Batch.objects.get(openai_id="batch_1").submission_token == "t"
    assert Batch.objects.get(openai_id="batch_2").submission_token is None
    assert Batch.objects.get(openai_id="batch_2").status == Status.FINALIZING


# --- Upserting over a cached row ------------------------------------------------------------------


def test_the_same_payload_twice_changes_nothing_but_the_sync_time():
    payload = make_batch()
    batch_upsert(payload=payload, now=NOW)

    result = batch_upsert(payload=payload, now=NOW + dt.timedelta(minutes=1))

    assert not result.created and not result.changed and not result.stale
    assert Batch.objects.count() == 1
    assert Batch.objects.get().synced_at == NOW + dt.timedelta(minutes=1)


def test_a_newer_payload_updates_the_row():
    batch_upsert(payload=make_batch(request_counts=counts(100, 40, 2)), now=NOW)

    result = batch_upsert(payload=make_batch(request_counts=counts(100, 60, 2)), now=NOW)

    assert result.changed and not result.stale
    assert Batch.objects.get().request_completed == 60


def test_validating_then_in_progress_is_accepted():
    batch_upsert(payload=make_batch(status="validating", request_counts=counts(0, 0, 0)), now=NOW)

    result = batch_upsert(payload=make_batch(status="in_progress"), now=NOW)

    assert result.changed
    assert Batch.objects.get().status == Status.IN_PROGRESS


def test_an_in_progress_payload_after_completed_is_refused():
    batch_upsert(payload=load_payload("batch_completed.json"), now=NOW)
    older = load_payload("batch_completed.json")
    older.update(status="in_progress", completed_at=None, finalizing_at=None, output_file_id=None)

    result = batch_upsert(payload=older, now=NOW + dt.timedelta(minutes=1))

    assert result.stale and not result.changed
    batch = Batch.objects.get()
    assert batch.status == Status.COMPLETED
    assert batch.output_file_id == "file-out456"
    assert batch.raw["status"] == "completed"


def test_same_status_with_lower_counts_is_refused():
    batch_upsert(payload=make_batch(request_counts=counts(100, 60, 5)), now=NOW)

    result = batch_upsert(payload=make_batch(request_counts=counts(100, 40, 2)), now=NOW)

    assert result.stale
    assert Batch.objects.get().request_completed == 60


def test_same_status_with_equal_counts_and_new_fields_is_accepted():
    batch_upsert(payload=make_batch(), now=NOW)

    result = batch_upsert(payload=make_batch(metadata={"job": "renamed"}), now=NOW)

    assert result.changed and not result.stale
    assert Batch.objects.get().label == "renamed"


@pytest.mark.parametrize("first", ["completed", "failed", "expired", "cancelled"])
@pytest.mark.parametrize("then", ["completed", "failed", "expired", "cancelled"])
def test_a_terminal_status_never_changes_to_another_terminal_status(first, then):
    batch_upsert(payload=make_batch(status=first), now=NOW)

    result = batch_upsert(
        payload=make_batch(status=then, request_counts=counts(100, 90, 10)), now=NOW
    )

    assert Batch.objects.get().status == first
    assert result.stale is (first != then)


@pytest.mark.parametrize(
    ("first", "then", "final"),
    [
        ("validating", "in_progress", "in_progress"),
        ("in_progress", "finalizing", "finalizing"),
        ("finalizing", "completed", "completed"),
        ("in_progress", "cancelling", "cancelling"),
        ("cancelling", "cancelled", "cancelled"),
        ("in_progress", "validating", "in_progress"),
        ("finalizing", "in_progress", "finalizing"),
        ("cancelling", "in_progress", "cancelling"),
        ("cancelled", "cancelling", "cancelled"),
        ("expired", "in_progress", "expired"),
        ("failed", "validating", "failed"),
    ],
)
def test_the_status_only_moves_forward(first, then, final):
    batch_upsert(payload=make_batch(status=first), now=NOW)

    batch_upsert(payload=make_batch(status=then), now=NOW)

    assert Batch.objects.get().status == final


def test_a_batch_seen_for_the_first_time_in_any_status_is_stored():
    result = batch_upsert(payload=make_batch(id="batch-late", status="cancelling"), now=NOW)

    assert result.created
    assert Batch.objects.get().can_cancel is False
