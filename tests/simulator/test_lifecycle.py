"""A batch's life in the simulator: statuses, timestamps, counts, result files, outcomes.

Timeline at speed 1 for a file of N requests: validating 2 s, in_progress N s, finalizing 2 s.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from simulator import Simulator, Timing
from tests.openapi import validate_payload
from tests.simulator.conftest import START, Api, FakeClock, chat_request, jsonl, parse_jsonl

NULL_STAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def rows(count: int, prefix: str = "req") -> list[dict[str, Any]]:
    return [chat_request(f"{prefix}-{i}", f"Question number {i}") for i in range(1, count + 1)]


def stamps_set(batch: dict[str, Any]) -> set[str]:
    return {key for key in NULL_STAMPS if batch[key] is not None}


def test_it_walks_a_batch_through_every_status(api: Api) -> None:
    batch = api.create_batch(rows(4), metadata={"team": "search"})
    assert batch["id"].startswith("batch_")
    assert batch["status"] == "validating"
    assert batch["created_at"] == START
    assert batch["expires_at"] == START + 24 * 3600
    assert batch["metadata"] == {"team": "search"}
    assert batch["model"] == "gpt-4o-mini"
    assert stamps_set(batch) == set()
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    bid = batch["id"]

    api.advance(2)
    batch = api.batch(bid)
    assert batch["status"] == "in_progress"
    assert batch["in_progress_at"] == START + 2
    assert batch["request_counts"] == {"total": 4, "completed": 0, "failed": 0}

    api.advance(2)
    batch = api.batch(bid)
    assert batch["status"] == "in_progress"
    assert batch["request_counts"]["completed"] == 2

    api.advance(2)
    batch = api.batch(bid)
    assert batch["status"] == "finalizing"
    assert batch["finalizing_at"] == START + 6
    assert batch["request_counts"]["completed"] == 4
    assert batch["output_file_id"] is None

    api.advance(2)
    batch = api.batch(bid)
    assert batch["status"] == "completed"
    assert batch["completed_at"] == START + 8
    assert stamps_set(batch) == {"in_progress_at", "finalizing_at", "completed_at"}
    assert batch["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert batch["output_file_id"].startswith("file-")
    assert batch["error_file_id"] is None
    assert batch["errors"] is None

    api.advance(3600)
    assert api.batch(bid) == batch, "a finished batch no longer changes"


def test_the_output_file_answers_every_request_in_openai_format(api: Api) -> None:
    requests_in = rows(6)
    batch = api.create_batch(requests_in)
    api.advance(20)
    batch = api.batch(batch["id"])

    output_file = api.call("GET", f"/files/{batch['output_file_id']}")
    assert output_file["purpose"] == "batch_output"
    assert output_file["filename"] == f"{batch['id']}_output.jsonl"
    data = api.content(batch["output_file_id"])
    assert output_file["bytes"] == len(data)

    results = {line["custom_id"]: line for line in parse_jsonl(data)}
    assert set(results) == {row["custom_id"] for row in requests_in}
    for row in requests_in:
        line = results[row["custom_id"]]
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["request_id"].startswith("req_")
        body = line["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["model"] == "gpt-4o-mini"
        question = row["body"]["messages"][-1]["content"]
        assert question in body["choices"][0]["message"]["content"]
        assert body["usage"]["prompt_tokens"] == len(question) // 4
        assert body["usage"]["total_tokens"] == (
            body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        )

    usage = batch["usage"]
    bodies = [line["response"]["body"] for line in results.values()]
    assert usage["input_tokens"] == sum(b["usage"]["prompt_tokens"] for b in bodies)
    assert usage["output_tokens"] == sum(b["usage"]["completion_tokens"] for b in bodies)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_output_lines_come_in_a_shuffled_but_stable_order(api: Api) -> None:
    requests_in = rows(30)
    batch = api.create_batch(requests_in)
    api.advance(40)
    batch = api.batch(batch["id"])
    data = api.content(batch["output_file_id"])
    order = [line["custom_id"] for line in parse_jsonl(data)]
    assert sorted(order) == sorted(row["custom_id"] for row in requests_in)
    assert order != [row["custom_id"] for row in requests_in]
    assert api.content(batch["output_file_id"]) == data


def test_requests_with_fail_in_their_custom_id_land_in_the_error_file(api: Api) -> None:
    requests_in = [chat_request("ok-1"), chat_request("will-fail"), chat_request("fail-500")]
    batch = api.create_batch(requests_in)
    api.advance(10)
    batch = api.batch(batch["id"])
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 3, "completed": 1, "failed": 2}

    output = parse_jsonl(api.content(batch["output_file_id"]))
    assert [line["custom_id"] for line in output] == ["ok-1"]
    errors = {line["custom_id"]: line for line in parse_jsonl(api.content(batch["error_file_id"]))}
    assert set(errors) == {"will-fail", "fail-500"}
    client_error = errors["will-fail"]["response"]
    assert client_error["status_code"] == 400
    assert client_error["body"]["error"]["type"] == "invalid_request_error"
    server_error = errors["fail-500"]["response"]
    assert server_error["status_code"] == 500
    assert server_error["body"]["error"]["type"] == "server_error"
    assert all(line["error"] is None for line in errors.values())
    # Failed requests are not billed.
    assert batch["usage"]["input_tokens"] == output[0]["response"]["body"]["usage"]["prompt_tokens"]


def test_a_batch_whose_every_request_failed_still_completes_without_output(api: Api) -> None:
    batch = api.create_batch([chat_request("fail-a"), chat_request("fail-b")])
    api.advance(10)
    batch = api.batch(batch["id"])
    assert batch["status"] == "completed"
    assert batch["output_file_id"] is None
    assert len(parse_jsonl(api.content(batch["error_file_id"]))) == 2


def test_an_invalid_input_file_fails_the_batch_with_line_numbers(api: Api) -> None:
    content = b"\n".join(
        [
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}',
            b"this is not json",
            b'{"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {}}',
            b'{"custom_id": "c", "method": "GET", "url": "/v1/chat/completions", "body": {}}',
            b"",
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}',
        ]
    )
    file_id = api.upload(content)["id"]
    batch = api.call(
        "POST",
        "/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    assert batch["status"] == "validating"
    assert batch["errors"] is None

    api.advance(2)
    batch = api.batch(batch["id"])
    assert batch["status"] == "failed"
    assert batch["failed_at"] == START + 2
    assert stamps_set(batch) == {"failed_at"}
    assert batch["output_file_id"] is None and batch["error_file_id"] is None
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert batch["errors"]["object"] == "list"
    found = [(e["code"], e["param"], e["line"]) for e in batch["errors"]["data"]]
    assert found == [
        ("invalid_json_line", None, 2),
        ("mismatched_endpoint", "url", 3),
        ("invalid_method", "method", 4),
        ("duplicate_custom_id", "custom_id", 6),
    ]
    assert all(e["message"] for e in batch["errors"]["data"])


def test_an_empty_input_file_fails_the_batch(api: Api) -> None:
    file_id = api.upload(b"\n")["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    batch = api.call("POST", "/batches", json=body)
    api.advance(2)
    batch = api.batch(batch["id"])
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "empty_file"


def test_cancel_stops_the_batch_and_keeps_partial_output(api: Api) -> None:
    requests_in = rows(10)
    batch = api.create_batch(requests_in)
    api.advance(2 + 5)
    assert api.batch(batch["id"])["request_counts"]["completed"] == 5

    cancelled = api.call("POST", f"/batches/{batch['id']}/cancel")
    assert cancelled["status"] == "cancelling"
    assert cancelled["cancelling_at"] == START + 7

    api.advance(2)
    batch = api.batch(batch["id"])
    assert batch["status"] == "cancelling"
    assert batch["request_counts"]["completed"] == 5, "nothing runs once cancelling"

    api.advance(1)
    batch = api.batch(batch["id"])
    assert batch["status"] == "cancelled"
    assert batch["cancelled_at"] == START + 10
    assert stamps_set(batch) == {"in_progress_at", "cancelling_at", "cancelled_at"}

    done = parse_jsonl(api.content(batch["output_file_id"]))
    not_run = parse_jsonl(api.content(batch["error_file_id"]))
    assert len(done) == 5 and len(not_run) == 5
    assert {line["custom_id"] for line in done + not_run} == {r["custom_id"] for r in requests_in}
    for line in not_run:
        assert line["response"] is None
        assert line["error"]["code"] == "batch_cancelled"
        assert line["error"]["message"]

    error = api.error("POST", f"/batches/{batch['id']}/cancel", 409)
    assert "cancelled" in error["message"]


def test_a_batch_cancelled_while_validating_has_no_results(api: Api) -> None:
    batch = api.create_batch(rows(3))
    api.call("POST", f"/batches/{batch['id']}/cancel")
    api.advance(3)
    batch = api.batch(batch["id"])
    assert batch["status"] == "cancelled"
    assert batch["in_progress_at"] is None
    assert batch["output_file_id"] is None and batch["error_file_id"] is None


def test_sim_expire_metadata_expires_the_batch_halfway_with_partial_output(api: Api) -> None:
    batch = api.create_batch(rows(10), metadata={"sim_expire": "true"})
    api.advance(2 + 4)
    assert api.batch(batch["id"])["status"] == "in_progress"
    api.advance(1)
    batch = api.batch(batch["id"])
    assert batch["status"] == "expired"
    assert batch["expired_at"] == START + 7
    assert batch["request_counts"] == {"total": 10, "completed": 5, "failed": 0}
    assert len(parse_jsonl(api.content(batch["output_file_id"]))) == 5
    not_run = parse_jsonl(api.content(batch["error_file_id"]))
    assert {line["error"]["code"] for line in not_run} == {"batch_expired"}
    assert len(not_run) == 5


def test_the_control_api_expires_a_running_batch(api: Api) -> None:
    batch = api.create_batch(rows(10))
    api.advance(2 + 4)
    response = api.control("POST", f"/batches/{batch['id']}/expire")
    assert response.status_code == 200
    validate_payload(response.json(), "Batch")
    batch = api.batch(batch["id"])
    assert batch["status"] == "expired"
    assert batch["expired_at"] == START + 6
    assert batch["request_counts"]["completed"] == 4
    assert api.control("POST", f"/batches/{batch['id']}/expire").status_code == 409


def test_the_control_api_fails_a_running_batch(api: Api) -> None:
    batch = api.create_batch(rows(10))
    api.advance(3)
    response = api.control("POST", f"/batches/{batch['id']}/fail", {"code": "quota"})
    assert response.status_code == 200
    batch = api.batch(batch["id"])
    assert batch["status"] == "failed"
    assert batch["failed_at"] == START + 3
    assert batch["errors"]["data"][0]["code"] == "quota"
    assert batch["output_file_id"] is None
    assert api.control("POST", "/batches/batch_nope/fail").status_code == 404


def test_output_expires_after_sets_the_output_file_expiry(api: Api) -> None:
    batch = api.create_batch(
        rows(1), output_expires_after={"anchor": "created_at", "seconds": 7200}
    )
    api.advance(10)
    batch = api.batch(batch["id"])
    output_file = api.call("GET", f"/files/{batch['output_file_id']}")
    assert output_file["expires_at"] == batch["completed_at"] + 7200


ENDPOINT_REQUESTS = {
    "/v1/chat/completions": ({"messages": [{"role": "user", "content": "Hi"}]}, "chat.completion"),
    "/v1/responses": ({"input": "Hi"}, "response"),
    "/v1/embeddings": ({"input": ["one", "two"]}, "list"),
    "/v1/completions": ({"prompt": "Hi"}, "text_completion"),
    "/v1/moderations": ({"input": "Hi"}, None),
    "/v1/images/generations": ({"prompt": "a cat"}, None),
    "/v1/images/edits": ({"prompt": "a hat"}, None),
    "/v1/videos": ({"prompt": "a dog"}, "video"),
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINT_REQUESTS))
def test_each_endpoint_gets_a_plausible_body(api: Api, endpoint: str) -> None:
    body, kind = ENDPOINT_REQUESTS[endpoint]
    row = {"custom_id": "x", "method": "POST", "url": endpoint, "body": {"model": "m", **body}}
    batch = api.create_batch([row], endpoint=endpoint)
    api.advance(10)
    batch = api.batch(batch["id"])
    assert batch["status"] == "completed"
    assert batch["model"] == "m"
    [line] = parse_jsonl(api.content(batch["output_file_id"]))
    answer = line["response"]["body"]
    assert answer.get("object") == kind
    if endpoint == "/v1/responses":
        [message] = answer["output"]
        assert message["content"][0]["type"] == "output_text"
        assert "Hi" in message["content"][0]["text"]
    if endpoint == "/v1/embeddings":
        assert [item["index"] for item in answer["data"]] == [0, 1]
        assert all(isinstance(v, float) for v in answer["data"][0]["embedding"])
        assert batch["usage"]["output_tokens"] == 0
    if endpoint == "/v1/moderations":
        assert answer["results"][0]["flagged"] is False
    if endpoint.startswith("/v1/images"):
        assert answer["data"][0]["b64_json"]


def test_a_batch_still_running_after_24_hours_expires() -> None:
    clock = FakeClock()
    slow = Timing(per_request=3600, max_in_progress=48 * 3600)
    sim = Simulator(clock=clock, timing=slow)
    try:
        upload = sim.create_file(filename="in.jsonl", purpose="batch", content=jsonl(rows(30)))
        batch = sim.create_batch(
            {
                "input_file_id": upload["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
        )
        clock.now += 24 * 3600 - 1
        assert sim.get_batch(batch["id"])["status"] == "in_progress"
        clock.now += 1
        batch = sim.get_batch(batch["id"])
        validate_payload(batch, "Batch")
        assert batch["status"] == "expired"
        assert batch["expired_at"] == batch["expires_at"]
        assert 0 < batch["request_counts"]["completed"] < 30
        errors = parse_jsonl(b"".join(sim.file_content(batch["error_file_id"])[1].chunks()))
        assert len(errors) == 30 - batch["request_counts"]["completed"]
        assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    finally:
        sim.close()


def test_concurrent_clients_do_not_lose_batches(api: Api) -> None:
    def submit(worker: int) -> list[str]:
        return [api.create_batch([chat_request(f"w{worker}-{i}")])["id"] for i in range(5)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        created = [bid for ids in pool.map(submit, range(4)) for bid in ids]
    listed = [b["id"] for b in api.call("GET", "/batches?limit=100")["data"]]
    assert sorted(listed) == sorted(created)
    assert len(set(created)) == 20
