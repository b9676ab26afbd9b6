"""The fault switches and controls added for the upstream-fault tests (issue 13, item 5): quota,
429 without Retry-After, a proxy's HTML page, dropped connections, empty and error-carrying 200s,
wrong content types, batch objects missing fields, downloads cut short, faults aimed at one
operation or coming after the request took effect, and batches that vanish or seem to move
backwards. The defaults stay as they were (``test_faults.py``)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from simulator import Faults
from tests.simulator.conftest import TIMEOUT, Api, chat_request, jsonl, parse_jsonl


def test_the_new_switches_are_off_by_default() -> None:
    faults = Faults()
    assert (faults.quota, faults.proxy_error, faults.reset, faults.cut_downloads) == (0, 0, 0, 0)
    assert (faults.empty_body, faults.error_body, faults.act_first) == (0, 0, False)
    assert faults.operations is None and faults.drop_batch_fields == []
    assert faults.content_type is None and faults.proxy_status == 502
    assert faults.retry_after == 1


def test_rate_limit_without_retry_after_sends_no_header(api: Api) -> None:
    api.faults(rate_limit=1, retry_after=None)
    response = api.request("GET", "/batches")
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    api.call("GET", "/batches")


def test_quota_answers_429_insufficient_quota_without_retry_after(api: Api) -> None:
    api.faults(quota=1)
    error = api.error("GET", "/batches", 429)
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "quota" in error["message"]
    api.call("GET", "/batches")


@pytest.mark.parametrize("status", [502, 503, 504])
def test_proxy_error_answers_an_html_page_with_the_status(api: Api, status: int) -> None:
    api.faults(proxy_error=1, proxy_status=status)
    response = api.request("GET", "/batches")
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<html>") and str(status) in response.text
    api.call("GET", "/batches")


def test_proxy_status_200_answers_a_sign_in_page(api: Api) -> None:
    api.faults(proxy_error=1, proxy_status=200)
    response = api.request("GET", "/batches/batch_x")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Sign in" in response.text


def test_reset_drops_the_connection_without_an_answer(api: Api) -> None:
    api.faults(reset=2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            api.session.get(api.server.base_url + "/batches", timeout=TIMEOUT)
    api.call("GET", "/batches")
    assert api.calls()["listBatches"] == 3


def test_a_reset_create_does_nothing_unless_act_first(api: Api) -> None:
    file_id = api.upload(jsonl([chat_request("a")]))["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    api.faults(reset=1)
    with pytest.raises(requests.ConnectionError):
        api.session.post(api.server.base_url + "/batches", json=body, timeout=TIMEOUT)
    assert api.call("GET", "/batches")["data"] == []

    api.faults(reset=1, act_first=True)
    with pytest.raises(requests.ConnectionError):
        api.session.post(api.server.base_url + "/batches", json=body, timeout=TIMEOUT)
    assert len(api.call("GET", "/batches")["data"]) == 1, "the answer was lost, not the create"


def test_empty_body_and_error_body_answer_200(api: Api) -> None:
    api.faults(empty_body=1, error_body=1)
    empty = api.request("GET", "/batches")
    assert (empty.status_code, empty.content) == (200, b"")
    carrying = api.request("GET", "/batches")
    assert carrying.status_code == 200
    assert carrying.json()["error"]["code"] == "upstream_overloaded"
    api.call("GET", "/batches")


def test_counters_are_consumed_in_their_order(api: Api) -> None:
    api.faults(rate_limit=1, quota=1, server_error=1, proxy_error=1, malformed=1, empty_body=1)
    statuses = [api.request("GET", "/batches") for _ in range(6)]
    assert [r.status_code for r in statuses] == [429, 429, 500, 502, 200, 200]
    assert statuses[1].json()["error"]["code"] == "insufficient_quota"
    assert statuses[5].content == b""


def test_operations_aims_the_counters_and_latency_at_some_calls_only(api: Api) -> None:
    batch = api.create_batch([chat_request("a")])
    api.faults(server_error=1, latency=0.3, operations=["retrieveBatch"])
    started = time.monotonic()
    api.call("GET", "/batches")  # not aimed at: no fault, no wait
    assert time.monotonic() - started < 0.3
    api.error("GET", f"/batches/{batch['id']}", 500)
    api.call("GET", f"/batches/{batch['id']}")
    assert api.faults(operations=None)["operations"] is None


def test_act_first_latency_waits_after_the_request_took_effect(api: Api) -> None:
    file_id = api.upload(jsonl([chat_request("a")]))["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    api.faults(latency=1.0, act_first=True, operations=["createBatch"])
    with pytest.raises(requests.Timeout):
        api.session.post(api.server.base_url + "/batches", json=body, timeout=0.3)
    api.faults(latency=0)
    assert len(api.call("GET", "/batches")["data"]) == 1, "created before the slow answer"


def test_act_first_malformed_and_server_error_answers_follow_the_request(api: Api) -> None:
    file_id = api.upload(jsonl([chat_request("a")]))["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    api.faults(malformed=1, server_error=1, act_first=True, operations=["createBatch"])
    assert api.request("POST", "/batches", json=body).status_code == 500
    response = api.request("POST", "/batches", json=body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert len(api.call("GET", "/batches")["data"]) == 2


def test_content_type_labels_json_answers_differently(api: Api) -> None:
    api.faults(content_type="text/plain")
    response = api.request("GET", "/batches")
    assert response.headers["Content-Type"] == "text/plain"
    assert response.json()["object"] == "list"
    assert api.control("GET", "/faults").headers["Content-Type"] == "application/json"


def test_drop_batch_fields_leaves_keys_out_of_every_batch_object(api: Api) -> None:
    batch = api.create_batch([chat_request("a")])
    api.faults(drop_batch_fields=["status", "created_at"])
    retrieved = api.call("GET", f"/batches/{batch['id']}", validate=False)
    listed = api.call("GET", "/batches", validate=False)["data"][0]
    for shown in (retrieved, listed):
        assert "status" not in shown and "created_at" not in shown
        assert shown["id"] == batch["id"] and shown["endpoint"] == "/v1/chat/completions"
    api.faults(drop_batch_fields=[])
    assert api.batch(batch["id"])["status"] == "validating"


def test_cut_downloads_sends_half_the_announced_bytes_then_drops(api: Api) -> None:
    content = jsonl([chat_request(f"r-{i}") for i in range(50)])
    file_id = api.upload(content)["id"]
    api.faults(cut_downloads=1)
    response = api.session.get(
        f"{api.server.base_url}/files/{file_id}/content", stream=True, timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(content)
    received = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in response.iter_content(1024):
            received += chunk
    assert 0 < len(received) < len(content)
    assert content.startswith(received)
    assert api.content(file_id) == content  # only the next one


def test_forget_makes_a_batch_vanish(api: Api) -> None:
    kept = api.create_batch([chat_request("a")])
    gone = api.create_batch([chat_request("b")])
    assert api.control("POST", f"/batches/{gone['id']}/forget").status_code == 200
    assert api.error("GET", f"/batches/{gone['id']}", 404)["param"] == "batch_id"
    assert [b["id"] for b in api.call("GET", "/batches")["data"]] == [kept["id"]]
    assert api.batch(kept["id"])["id"] == kept["id"]
    assert api.control("POST", f"/batches/{gone['id']}/forget").status_code == 404


def test_lag_answers_a_batch_as_it_was_earlier(api: Api) -> None:
    batch = api.create_batch([chat_request("a"), chat_request("b")])
    api.advance(3.5)  # validating 2 s, then about one request done
    now = api.batch(batch["id"])
    assert now["status"] == "in_progress"

    lagged = api.control("POST", f"/batches/{batch['id']}/lag", {"seconds": 3})
    assert lagged.status_code == 200 and lagged.json()["status"] == "validating"
    assert api.batch(batch["id"])["status"] == "validating"
    assert api.call("GET", "/batches")["data"][0]["status"] == "validating"

    api.advance(60)  # finished now (and settled: its result files exist)
    assert api.batch(batch["id"])["status"] == "completed"
    api.control("POST", f"/batches/{batch['id']}/lag", {"seconds": 60})
    assert api.batch(batch["id"])["status"] == "in_progress"  # as it was 60 s ago
    api.control("POST", f"/batches/{batch['id']}/lag", {"seconds": 0})
    done = api.batch(batch["id"])
    assert done["status"] == "completed"
    assert parse_jsonl(api.content(done["output_file_id"]))
    assert api.control("POST", f"/batches/{batch['id']}/lag", {"seconds": -1}).status_code == 400


def test_bad_new_switches_are_refused(api: Api) -> None:
    for bad in (
        {"quota": -1},
        {"proxy_status": 99},
        {"proxy_status": True},
        {"operations": "createBatch"},
        {"drop_batch_fields": [1]},
        {"content_type": ""},
        {"act_first": "yes"},
        {"retry_after": "soon"},
    ):
        assert api.control("POST", "/faults", bad).status_code == 400, bad
    assert api.control("GET", "/faults").json()["proxy_status"] == 502
