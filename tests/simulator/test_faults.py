"""Fault switches and compatibility quirks set through ``POST /_sim/faults``."""

from __future__ import annotations

import json
import time

import pytest

from tests.simulator.conftest import Api, chat_request, parse_jsonl


def test_latency_slows_every_api_answer_but_not_the_control_api(api: Api) -> None:
    api.faults(latency=0.3)
    started = time.monotonic()
    api.call("GET", "/batches")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    api.calls()
    assert time.monotonic() - started < 0.3


def test_rate_limit_answers_429_with_retry_after_for_the_next_n_requests(api: Api) -> None:
    api.faults(rate_limit=2)
    for _ in range(2):
        response = api.request("GET", "/batches")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    api.call("GET", "/batches")

    api.faults(rate_limit=1, retry_after=7)
    response = api.request("GET", "/batches")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "requests"
    api.call("GET", "/batches")


def test_server_error_answers_500_for_the_next_n_requests(api: Api) -> None:
    api.faults(server_error=1)
    error = api.error("GET", "/batches", 500)
    assert error["type"] == "server_error"
    api.call("GET", "/batches")


def test_malformed_answers_200_with_a_body_that_is_not_json_and_does_nothing(api: Api) -> None:
    file_id = api.upload(b'{"custom_id": "a"}\n')["id"]
    api.faults(malformed=1)
    body = {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    response = api.request("POST", "/batches", json=body)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert api.call("GET", "/batches")["data"] == [], "a malformed answer has no side effect"


def test_faulted_requests_are_counted_and_faults_come_one_per_request(api: Api) -> None:
    api.faults(rate_limit=1, server_error=1, malformed=1)
    statuses = [api.request("GET", "/batches").status_code for _ in range(3)]
    assert statuses == [429, 500, 200]
    api.call("GET", "/batches")
    assert api.calls()["listBatches"] == 4


def test_endless_list_keeps_saying_has_more_and_repeats_the_last_page(api: Api) -> None:
    assert api.control("POST", "/seed", {"count": 5}).status_code == 200
    api.faults(endless_list=True)
    after, seen = None, []
    for _ in range(6):  # bounded: the list never ends on its own
        page = api.call("GET", "/batches?limit=2" + (f"&after={after}" if after else ""))
        assert page["has_more"] is True
        seen.append([b["id"] for b in page["data"]])
        after = page["last_id"]
    assert seen[2] == seen[3] == seen[4] == seen[5]
    assert len(seen[3]) == 2
    files = api.call("GET", "/files?limit=1")
    assert files["has_more"] is True


def test_bad_fault_switches_are_refused_and_reset_clears_them(api: Api) -> None:
    assert api.control("POST", "/faults", {"explode": True}).status_code == 400
    assert api.control("POST", "/faults", {"rate_limit": -1}).status_code == 400
    assert api.control("POST", "/faults", {"quirks": {"nope": True}}).status_code == 400
    api.faults(server_error=5, quirks={"omit_nulls": True})
    assert api.control("POST", "/reset").status_code == 200
    faults = api.control("GET", "/faults").json()
    assert faults["server_error"] == 0 and faults["quirks"]["omit_nulls"] is False


def test_id_prefix_quirk_renders_batch_ids_like_a_gateway(api: Api) -> None:
    api.faults(quirks={"id_prefix": "batch-"})
    first = api.create_batch([chat_request("a")])
    second = api.create_batch([chat_request("b")])
    assert first["id"].startswith("batch-")
    assert api.batch(first["id"])["id"] == first["id"]
    page = api.call("GET", "/batches?limit=1")
    assert page["first_id"] == second["id"]
    page = api.call("GET", f"/batches?limit=1&after={page['last_id']}")
    assert [b["id"] for b in page["data"]] == [first["id"]]
    api.call("POST", f"/batches/{first['id']}/cancel")


def test_omit_nulls_quirk_leaves_null_fields_out(api: Api) -> None:
    api.faults(quirks={"omit_nulls": True})
    batch = api.create_batch([chat_request("a")])
    assert None not in batch.values()
    assert "output_file_id" not in batch and "in_progress_at" not in batch
    assert "request_counts" in batch


def test_skip_finalizing_quirk_never_shows_finalizing(api: Api) -> None:
    api.faults(quirks={"skip_finalizing": True})
    batch = api.create_batch([chat_request("a"), chat_request("b")])
    statuses = []
    for _ in range(6):
        current = api.batch(batch["id"])
        statuses.append(current["status"])
        api.advance(1)
    assert statuses == ["validating"] * 2 + ["in_progress"] * 2 + ["completed"] * 2
    assert current["finalizing_at"] is None


def test_body_as_string_quirk_encodes_output_bodies_as_json_strings(api: Api) -> None:
    api.faults(quirks={"body_as_string": True})
    batch = api.create_batch([chat_request("a"), chat_request("b-fail")])
    api.advance(10)
    batch = api.batch(batch["id"])
    [line] = parse_jsonl(api.content(batch["output_file_id"]))
    assert isinstance(line["response"]["body"], str)
    assert json.loads(line["response"]["body"])["object"] == "chat.completion"
    [failed] = parse_jsonl(api.content(batch["error_file_id"]))
    assert "error" in json.loads(failed["response"]["body"])


def test_errors_message_only_quirk_strips_error_bodies(api: Api) -> None:
    api.faults(quirks={"errors_message_only": True})
    response = api.request("GET", "/batches/batch_unknown")
    assert response.status_code == 404
    assert list(response.json()["error"]) == ["message"]
