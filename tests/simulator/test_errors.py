"""Error answers: OpenAI's shape and status for bad keys, unknown ids, conflicts and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from simulator import Simulator
from tests.simulator.conftest import Api, chat_request, jsonl


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Basic c2s6dGVzdA==", "sk-test"])
def test_a_request_without_a_bearer_key_is_a_401(api: Api, header: str | None) -> None:
    del api.session.headers["Authorization"]
    headers = {} if header is None else {"Authorization": header}
    error = api.error("GET", "/batches", 401, headers=headers)
    assert "API key" in error["message"]


def test_a_configured_key_is_the_only_one_accepted(api: Api, sim: Simulator) -> None:
    sim.api_key = "sk-right"
    error = api.error("GET", "/batches", 401, headers={"Authorization": "Bearer sk-wrong"})
    assert error["code"] == "invalid_api_key"
    assert "sk-wrong" not in error["message"] and "sk-right" not in error["message"]
    api.call("GET", "/batches", headers={"Authorization": "Bearer sk-right"})


def test_an_upload_refused_for_its_key_does_not_break_the_connection(api: Api) -> None:
    del api.session.headers["Authorization"]
    big = b"x" * (2 * 1024 * 1024)
    api.error("POST", "/files", 401, files={"file": ("a", big)}, data={"purpose": "batch"})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/batches/batch_unknown"),
        ("POST", "/batches/batch_unknown/cancel"),
        ("GET", "/files/file-unknown"),
        ("GET", "/files/file-unknown/content"),
        ("DELETE", "/files/file-unknown"),
        ("GET", "/nothing/here"),
        ("DELETE", "/batches"),
    ],
)
def test_unknown_ids_and_urls_are_a_404(api: Api, method: str, path: str) -> None:
    error = api.error(method, path, 404)
    assert error["type"] == "invalid_request_error"


def test_cancelling_a_finished_batch_is_a_409(api: Api) -> None:
    batch = api.create_batch([chat_request("a")])
    api.advance(60)
    error = api.error("POST", f"/batches/{batch['id']}/cancel", 409)
    assert error["message"] == "Cannot cancel a batch with status 'completed'."


@pytest.fixture
def input_file(api: Api) -> str:
    return api.upload(jsonl([chat_request("a")]))["id"]


def create_body(input_file: str, **changes: Any) -> dict[str, Any]:
    body = {
        "input_file_id": input_file,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"endpoint": "/v1/fine_tuning/jobs"}, "endpoint"),
        ({"endpoint": None}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": ["k"]}, "metadata"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, "output_expires_after"),
        ({"priority": "high"}, "priority"),
    ],
)
def test_an_invalid_create_is_a_400(
    api: Api, input_file: str, changes: dict[str, Any], param: str
) -> None:
    error = api.error("POST", "/batches", 400, json=create_body(input_file, **changes))
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_the_largest_valid_metadata_is_accepted(api: Api, input_file: str) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    batch = api.call("POST", "/batches", json=create_body(input_file, metadata=metadata))
    assert batch["metadata"] == metadata


def test_the_input_file_must_exist_and_be_for_batches(api: Api) -> None:
    error = api.error("POST", "/batches", 404, json=create_body("file-missing"))
    assert error["param"] == "input_file_id"
    other = api.upload(b"{}\n", purpose="user_data")["id"]
    error = api.error("POST", "/batches", 400, json=create_body(other))
    assert error["param"] == "input_file_id"


def test_a_body_that_is_not_json_is_a_400(api: Api) -> None:
    error = api.error("POST", "/batches", 400, data=b"{not json")
    assert "JSON" in error["message"]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten", "after=batch_unknown"])
def test_bad_list_parameters_are_a_400(api: Api, query: str) -> None:
    error = api.error("GET", f"/batches?{query}", 400)
    assert error["param"] in ("limit", "after")
