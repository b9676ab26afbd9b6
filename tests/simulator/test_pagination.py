"""Listing batches: newest first, ``after`` cursors, seeding, call counts, and 10,000 batches."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.openapi import validate_response
from tests.simulator.conftest import START, Api, chat_request

STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)


def walk(api: Api, limit: int, *, validate_every: int = 1) -> list[dict[str, Any]]:
    """Every page of the list, following ``after``; bounded so a bug cannot loop forever."""
    pages: list[dict[str, Any]] = []
    after = None
    for number in range(100_000 // limit + 2):
        query = f"?limit={limit}" + (f"&after={after}" if after else "")
        page = api.call("GET", f"/batches{query}", validate=False)
        if number % validate_every == 0 or not page["has_more"]:
            validate_response("GET", "/v1/batches", page)
        assert page["object"] == "list"
        assert page["first_id"] == page["data"][0]["id"]
        assert page["last_id"] == page["data"][-1]["id"]
        pages.append(page)
        if not page["has_more"]:
            return pages
        after = page["last_id"]
    raise AssertionError("the list never ended")


def test_batches_are_listed_newest_first_with_a_cursor(api: Api) -> None:
    created = []
    for i in range(5):
        created.append(api.create_batch([chat_request(f"r{i}")])["id"])
        api.advance(1)
    pages = walk(api, limit=2)
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert [b["id"] for p in pages for b in p["data"]] == created[::-1]
    assert [p["has_more"] for p in pages] == [True, True, False]

    default = api.call("GET", "/batches")
    assert len(default["data"]) == 5


def test_an_empty_list_has_no_cursor(api: Api) -> None:
    page = api.call("GET", "/batches")
    assert page == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_the_state_endpoint_counts_calls_per_operation(api: Api) -> None:
    batch = api.create_batch([chat_request("a")])
    api.batch(batch["id"])
    api.batch(batch["id"])
    api.call("GET", "/batches")
    api.error("GET", "/batches/batch_unknown", 404)
    calls = api.calls()
    assert calls["createFile"] == 1
    assert calls["createBatch"] == 1
    assert calls["retrieveBatch"] == 3
    assert calls["listBatches"] == 1
    assert calls["cancelBatch"] == 0
    state = api.control("GET", "/state").json()
    assert state["batches"] == 1 and state["now"] == START


@pytest.mark.parametrize("status", STATUSES)
def test_seed_creates_batches_in_any_status(api: Api, status: str) -> None:
    response = api.control("POST", "/seed", {"count": 3, "status": status})
    assert response.status_code == 200
    page = api.call("GET", "/batches")
    assert [b["status"] for b in page["data"]] == [status] * 3
    batch = page["data"][0]
    if status == "completed":
        assert batch["output_file_id"] and batch["completed_at"] and batch["usage"]["total_tokens"]
    if status in ("cancelled", "expired"):
        assert batch["output_file_id"] and batch["error_file_id"]
    if status == "failed":
        assert batch["errors"]["data"][0]["code"] == "token_limit_exceeded"


def test_seed_refuses_bad_options(api: Api) -> None:
    assert api.control("POST", "/seed", {"count": 2, "status": "done"}).status_code == 400
    assert api.control("POST", "/seed", {"count": 0}).status_code == 400
    assert api.control("POST", "/seed", {"count": 2, "endpoint": "/v1/x"}).status_code == 400


def test_ten_thousand_seeded_batches_walk_in_a_hundred_pages(api: Api) -> None:
    started = time.monotonic()
    response = api.control("POST", "/seed", {"count": 10_000})
    assert response.status_code == 200
    assert time.monotonic() - started < 3, "seeding must stay cheap enough for benchmarks"

    # Every page's envelope is checked; batches are validated on every 10th page and the last
    # (validating all 10,000 with jsonschema alone would take ~5 s; they share one code path).
    pages = walk(api, limit=100, validate_every=10)
    assert len(pages) == 100
    ids = [b["id"] for p in pages for b in p["data"]]
    assert len(ids) == len(set(ids)) == 10_000
    assert ids[0] == response.json()["last_id"] and ids[-1] == response.json()["first_id"]
    created = [b["created_at"] for p in pages for b in p["data"]]
    assert created == sorted(created, reverse=True)
    assert api.calls()["listBatches"] == 100
