"""batches.payloads: Batch and File objects from any compatible server, read into OpenAI's shape.

Plain pytest, no database: the module is pure Python. The tables hold what Azure and other
servers have been seen to send (see docs: providers-webhooks-prices.md, Azure section).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from batches.payloads import (
    BATCH_TIMESTAMPS,
    STATUSES,
    normalize_batch,
    normalize_file,
    normalize_list,
    normalize_status,
    to_unix_seconds,
)
from tests.conftest import load_payload

NOON = 1719835200  # 2024-07-01T12:00:00Z


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NOON, NOON),
        (float(NOON), NOON),
        (NOON + 0.9, NOON),
        (str(NOON), NOON),
        (f"  {NOON} ", NOON),
        (f"{NOON}.5", NOON),
        (NOON * 1000, NOON),
        (NOON * 1000 + 999, NOON),
        (str(NOON * 1000), NOON),
        (float(NOON * 1000), NOON),
        ("2024-07-01T12:00:00Z", NOON),
        ("2024-07-01t12:00:00z", NOON),
        ("2024-07-01T12:00:00+00:00", NOON),
        ("2024-07-01T14:00:00+02:00", NOON),
        ("2024-07-01T07:00:00-05:00", NOON),
        ("2024-07-01T12:00:00.123Z", NOON),
        ("2024-07-01T12:00:00.1234567Z", NOON),  # .NET's seven fractional digits
        ("2024-07-01T12:00:00", NOON),  # no zone: UTC
        ("2024-07-01 12:00:00", NOON),
        ("2024-07-01", NOON - 12 * 3600),
        (0, 0),
        (None, None),
        ("", None),
        ("   ", None),
        ("junk", None),
        ("yesterday", None),
        ("2024-13-45T99:00:00Z", None),
        (True, None),
        (False, None),
        (float("nan"), None),
        (float("inf"), None),
        ("1e400", None),
        (10**400, None),
        (10**20, None),  # not seconds, not milliseconds: no date at all
        ([NOON], None),
        ({"seconds": NOON}, None),
    ],
)
def test_timestamps_become_unix_seconds_or_none(value: Any, expected: int | None) -> None:
    result = to_unix_seconds(value)

    assert result == expected
    assert result is None or type(result) is int


def test_every_batch_timestamp_is_normalized() -> None:
    payload = {key: "2024-07-01T12:00:00Z" for key in BATCH_TIMESTAMPS}

    assert normalize_batch(payload) == dict.fromkeys(BATCH_TIMESTAMPS, NOON)


# --- statuses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        *[(status, status) for status in STATUSES],
        ("Validating", "validating"),
        ("VALIDATING", "validating"),
        ("InProgress", "in_progress"),
        ("In_progress", "in_progress"),
        ("in progress", "in_progress"),
        ("In Progress", "in_progress"),
        ("in-progress", "in_progress"),
        ("inprogress", "in_progress"),
        ("Finalizing", "finalizing"),
        ("Completed", "completed"),
        ("Failed", "failed"),
        ("Expired", "expired"),
        ("Cancelling", "cancelling"),
        ("Canceling", "cancelling"),
        ("Cancelled", "cancelled"),
        ("Canceled", "cancelled"),
        (" completed ", "completed"),
        ("Paused", "paused"),  # unknown: kept, lower-cased
        ("NotStarted", "notstarted"),
        ("", ""),
    ],
)
def test_statuses_become_canonical_names(status: str, expected: str) -> None:
    assert normalize_status(status) == expected
    assert normalize_batch({"status": status})["status"] == expected


def test_a_status_that_is_not_a_string_is_left_for_the_client_to_refuse() -> None:
    assert normalize_batch({"status": None}) == {"status": None}
    assert normalize_batch({"status": 3}) == {"status": 3}


# --- the other fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"output_file_id": ""}, {"output_file_id": None}),
        ({"error_file_id": ""}, {"error_file_id": None}),
        ({"input_file_id": ""}, {"input_file_id": None}),
        ({"error_file_id": "  "}, {"error_file_id": None}),
        ({"output_file_id": "file-out"}, {"output_file_id": "file-out"}),
        ({"output_file_id": None}, {"output_file_id": None}),
        ({"endpoint": None}, {"endpoint": None}),
        (
            {"request_counts": {"total": None, "completed": None, "failed": None}},
            {"request_counts": {"total": None, "completed": None, "failed": None}},
        ),
        (
            {"request_counts": {"total": "10", "completed": 4.0, "failed": 0}},
            {"request_counts": {"total": 10, "completed": 4, "failed": 0}},
        ),
        (
            {"request_counts": {"total": 10, "completed": "many", "failed": True}},
            {"request_counts": {"total": 10, "completed": None, "failed": None}},
        ),
        ({"request_counts": None}, {"request_counts": None}),
        ({"request_counts": "10/4/0"}, {"request_counts": None}),
        ({"request_counts": [10, 4, 0]}, {"request_counts": None}),
        ({"request_counts": {}}, {"request_counts": {}}),
    ],
)
def test_fields_azure_spells_differently_are_read(
    changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    result = normalize_batch({"id": "batch_1", "status": "completed", **changes})

    assert result == {"id": "batch_1", "status": "completed", **expected}


def test_unknown_keys_are_kept_and_absent_keys_stay_absent() -> None:
    payload = {"id": "batch_1", "status": "Completed", "x_azure_region": "swedencentral"}

    assert normalize_batch(payload) == {
        "id": "batch_1",
        "status": "completed",
        "x_azure_region": "swedencentral",
    }


def test_it_returns_a_new_dict_and_leaves_the_answer_as_it_was() -> None:
    payload = {
        "status": "Canceled",
        "created_at": "2024-07-01T12:00:00Z",
        "request_counts": {"total": "3", "completed": None, "failed": None},
    }
    before = copy.deepcopy(payload)

    result = normalize_batch(payload)

    assert payload == before
    assert result is not payload
    assert result["request_counts"] is not payload["request_counts"]


@pytest.mark.parametrize(
    "name",
    ["batch_in_progress.json", "batch_completed.json", "batch_full.json", "batch_bare.json"],
)
def test_an_openai_batch_comes_out_unchanged(name: str) -> None:
    payload = load_payload(name)

    assert normalize_batch(payload) == payload


def test_microsofts_example_batch_comes_out_in_openais_shape() -> None:
    # As in Microsoft's documentation of the dated API: ISO times, capitalised status, "" for
    # the absent output file, null endpoint and counts, no model or usage.
    azure = {
        "id": "batch_6287a3d7-3e1e-4b3e-9e2f-1c1b2a3d4e5f",
        "object": "batch",
        "endpoint": None,
        "errors": None,
        "input_file_id": "file-b4fa7277f3eb4722ac18b90f46102c3f",
        "completion_window": "24h",
        "status": "Validating",
        "output_file_id": "",
        "error_file_id": "",
        "created_at": "2024-07-01T12:00:00Z",
        "in_progress_at": None,
        "expires_at": "2024-07-02T12:00:00.0000000Z",
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": None, "completed": None, "failed": None},
        "metadata": None,
    }

    result = normalize_batch(azure)

    assert result["status"] == "validating"
    assert (result["created_at"], result["expires_at"]) == (NOON, NOON + 86400)
    assert (result["output_file_id"], result["error_file_id"]) == (None, None)
    assert result["endpoint"] is None
    assert "model" not in result and "usage" not in result
    assert result["request_counts"] == {"total": None, "completed": None, "failed": None}
    assert result["id"] == azure["id"] and result["input_file_id"] == azure["input_file_id"]


# --- list pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], []),
        ([{"id": "b1", "status": "Completed"}], [{"id": "b1", "status": "completed"}]),
        (
            [{"id": "b1", "status": "Failed"}, None, "b2", 3, [], {"id": "b3", "status": "x"}],
            [{"id": "b1", "status": "failed"}, {"id": "b3", "status": "x"}],
        ),
    ],
)
def test_a_list_page_normalizes_each_batch_and_drops_what_is_not_one(
    data: list[Any], expected: list[dict[str, Any]]
) -> None:
    page = {"object": "list", "data": data, "first_id": "b1", "last_id": "b3", "has_more": True}

    result = normalize_list(page)

    assert result == {**page, "data": expected}
    assert page["data"] is data  # the page passed in is not changed


@pytest.mark.parametrize("page", [{"object": "list"}, {"object": "list", "data": None}])
def test_a_list_page_without_data_is_left_for_the_client_to_refuse(page: dict[str, Any]) -> None:
    assert normalize_list(page) == page


def test_an_openai_list_page_comes_out_unchanged() -> None:
    page = {
        "object": "list",
        "data": [load_payload("batch_in_progress.json"), load_payload("batch_completed.json")],
        "first_id": "batch_abc123",
        "last_id": "batch_done1",
        "has_more": False,
    }

    assert normalize_list(json.loads(json.dumps(page))) == page


# --- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {}),
        ({"created_at": "2024-07-01T12:00:00Z"}, {"created_at": NOON}),
        ({"created_at": NOON * 1000}, {"created_at": NOON}),
        ({"expires_at": "2024-07-31T12:00:00+00:00"}, {"expires_at": NOON + 30 * 86400}),
        ({"expires_at": None}, {"expires_at": None}),
        ({"expires_at": "never"}, {"expires_at": None}),
        ({"bytes": "26"}, {"bytes": 26}),
        ({"bytes": None}, {"bytes": None}),
        ({"status": "Processed"}, {"status": "processed"}),
        ({"status_details": None}, {"status_details": None}),
    ],
)
def test_file_objects_are_read_the_same_way(
    changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    base = {
        "id": "file-1",
        "object": "file",
        "bytes": 26,
        "created_at": NOON,
        "filename": "input.jsonl",
        "purpose": "batch",
    }

    assert normalize_file({**base, **changes}) == {**base, **expected}
