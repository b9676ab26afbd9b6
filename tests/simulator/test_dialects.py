"""Dialects over HTTP (OpenAI, Azure's v1 API, Azure's dated API) and the enqueued-token limit.

The OpenAI server is conftest's; each Azure dialect has one server for the module, reset before
and after each test that uses it. Azure payloads are not OpenAI's (ISO times, capitalised
statuses), so they are checked here by hand rather than against the OpenAPI file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from simulator import Simulator, SimulatorServer
from tests.simulator.conftest import (
    REQUEST_ID,
    START,
    TIMEOUT,
    Api,
    FakeClock,
    chat_request,
    jsonl,
    parse_jsonl,
)

ROOT = Path(__file__).resolve().parents[2]
AZURE_DIALECTS = ("azure", "azure-legacy")
VERSION = "2024-10-21"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
START_ISO = "2025-10-09T08:53:20Z"  # START written the way Azure writes times
DAYS = 24 * 3600
TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def unix(value: str) -> float:
    assert ISO.match(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def token_rows(count: int, *, model: str = "gpt-4o-mini", prefix: str = "t") -> list[dict]:
    """Requests of 400 characters each: 100 estimated input tokens a request."""
    rows = [chat_request(f"{prefix}-{i}", "x" * 400) for i in range(count)]
    for row in rows:
        row["body"]["model"] = model
    return rows


def azure_error(response: requests.Response) -> dict[str, Any]:
    """The inner error of an Azure answer: a code and a message, perhaps the param."""
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "param"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


class AzureApi:
    """A client of one Azure dialect: its paths, the ``api-key`` header, its api-version."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self.dialect = server.sim.dialect
        self.session = requests.Session()
        self.session.headers["api-key"] = "azure-key"

    def url(self, path: str) -> str:
        if self.dialect == "azure-legacy":
            return f"{self.server.base_url}/openai{path}"
        return self.server.base_url + path

    def request(
        self, method: str, path: str, *, version: str | None = VERSION, **kwargs: Any
    ) -> requests.Response:
        params = dict(kwargs.pop("params", None) or {})
        if self.dialect == "azure-legacy" and version is not None:
            params["api-version"] = version
        response = self.session.request(
            method, self.url(path), params=params, timeout=TIMEOUT, **kwargs
        )
        assert REQUEST_ID.match(response.headers["x-request-id"])
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def error(self, method: str, path: str, status: int, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        return azure_error(response)

    def upload(self, content: bytes, **fields: str) -> dict[str, Any]:
        return self.call(
            "POST",
            "/files",
            files={"file": ("input.jsonl", content, "application/jsonl")},
            data={"purpose": "batch", **fields},
        )

    def create_body(self, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        file_id = self.upload(jsonl(rows))["id"]
        body = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        return {**body, **extra}

    def create_batch(self, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return self.call("POST", "/batches", json=self.create_body(rows, **extra))

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self.call("GET", f"/batches/{batch_id}")

    def content(self, file_id: str) -> bytes:
        response = self.request("GET", f"/files/{file_id}/content")
        assert response.status_code == 200, response.text
        return response.content

    def control(self, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(
            method, self.server.root_url + "/_sim" + path, json=body, timeout=TIMEOUT
        )

    def advance(self, seconds: float) -> None:
        assert self.control("POST", "/advance", {"seconds": seconds}).status_code == 200


@pytest.fixture(scope="module")
def azure_servers(clock: FakeClock) -> Iterator[dict[str, SimulatorServer]]:
    with (
        SimulatorServer(clock=clock, dialect="azure") as v1,
        SimulatorServer(clock=clock, dialect="azure-legacy") as dated,
    ):
        yield {"azure": v1, "azure-legacy": dated}


def _client(server: SimulatorServer, clock: FakeClock) -> Iterator[AzureApi]:
    def fresh() -> None:
        server.sim.reset()
        server.sim.api_key = None
        clock.now = START

    fresh()
    client = AzureApi(server)
    yield client
    client.session.close()
    fresh()


@pytest.fixture(params=AZURE_DIALECTS)
def azure(
    request: pytest.FixtureRequest, azure_servers: dict[str, SimulatorServer], clock: FakeClock
) -> Iterator[AzureApi]:
    """A client of each Azure dialect in turn."""
    yield from _client(azure_servers[request.param], clock)


@pytest.fixture
def v1(azure_servers: dict[str, SimulatorServer], clock: FakeClock) -> Iterator[AzureApi]:
    yield from _client(azure_servers["azure"], clock)


@pytest.fixture
def dated(azure_servers: dict[str, SimulatorServer], clock: FakeClock) -> Iterator[AzureApi]:
    yield from _client(azure_servers["azure-legacy"], clock)


# --- Paths, base URLs, the CLI ------------------------------------------------------------------


def test_each_dialect_gives_the_base_url_its_clients_use(
    server: SimulatorServer, azure_servers: dict[str, SimulatorServer]
) -> None:
    assert server.base_url == server.root_url + "/v1"
    assert azure_servers["azure"].base_url == azure_servers["azure"].root_url + "/openai/v1"
    assert azure_servers["azure-legacy"].base_url == azure_servers["azure-legacy"].root_url


def test_an_unknown_dialect_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="openai, azure, azure-legacy"):
        Simulator(dialect="azure_legacy")


def test_every_operation_answers_under_the_azure_dialects_paths(azure: AzureApi) -> None:
    uploaded = azure.upload(jsonl([chat_request("a")]))
    assert azure.call("GET", f"/files/{uploaded['id']}")["id"] == uploaded["id"]
    assert [f["id"] for f in azure.call("GET", "/files")["data"]] == [uploaded["id"]]
    assert azure.content(uploaded["id"]) == jsonl([chat_request("a")])
    body = {
        "input_file_id": uploaded["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    batch = azure.call("POST", "/batches", json=body)
    assert azure.batch(batch["id"])["id"] == batch["id"]
    assert [b["id"] for b in azure.call("GET", "/batches", params={"limit": 5})["data"]] == [
        batch["id"]
    ]
    assert azure.call("POST", f"/batches/{batch['id']}/cancel")["status"] == "Cancelling"
    assert azure.call("DELETE", f"/files/{uploaded['id']}")["deleted"] is True

    state = azure.control("GET", "/state").json()
    assert state["dialect"] == azure.dialect
    assert all(count == 1 for name, count in state["calls"].items() if name != "retrieveBatch")
    assert state["calls"]["retrieveBatch"] == 1


WRONG_PATHS = {
    "azure": ["/v1/batches", "/openai/batches?api-version=2024-10-21", "/openai/v1/nothing"],
    "azure-legacy": [
        "/v1/batches",
        "/openai/v1/batches",
        "/openai/v1/files?api-version=2024-10-21",
    ],
}


@pytest.mark.parametrize(
    ("dialect", "path"), [(d, p) for d, paths in WRONG_PATHS.items() for p in paths]
)
def test_in_an_azure_dialect_other_dialects_paths_are_a_404_naming_this_one(
    azure_servers: dict[str, SimulatorServer], dialect: str, path: str
) -> None:
    server = azure_servers[dialect]
    response = requests.get(server.root_url + path, headers={"api-key": "k"}, timeout=TIMEOUT)
    assert response.status_code == 404
    error = azure_error(response)
    assert error["code"] == "404"
    assert "Azure OpenAI" in error["message"]
    prefix = {"azure": "/openai/v1/", "azure-legacy": "/openai/"}[dialect]
    assert f"paths start with {prefix}" in error["message"]


@pytest.mark.parametrize(
    "path", ["/openai/v1/batches", "/openai/batches?api-version=2024-10-21", "/openai/files"]
)
def test_in_the_openai_dialect_azure_paths_are_a_404_like_any_unknown_path(
    api: Api, path: str
) -> None:
    response = api.session.get(api.server.root_url + path, timeout=TIMEOUT)
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("args", "env", "suffix"),
    [
        (["--dialect", "azure-legacy", "--enqueued-token-limit", "1000"], {}, ""),
        ([], {"SIMULATOR_DIALECT": "azure"}, "/openai/v1"),
    ],
)
def test_the_cli_takes_a_dialect_and_prints_its_base_url(
    args: list[str], env: dict[str, str], suffix: str
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        match = re.fullmatch(r"(http://127\.0\.0\.1:\d+)(.*)", base_url)
        assert match and match.group(2) == suffix, base_url
        state = requests.get(match.group(1) + "/_sim/state", timeout=5).json()
        assert state["dialect"] == (env.get("SIMULATOR_DIALECT") or "azure-legacy")
        assert state["enqueued_token_limit"] == (1000 if args else None)
        process.terminate()
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_the_cli_refuses_an_unknown_dialect() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "simulator", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SIMULATOR_DIALECT": "azure_v1"},
        timeout=10,
    )
    assert done.returncode == 2
    assert "--dialect must be one of openai, azure, azure-legacy" in done.stderr


# --- Auth and api-version -----------------------------------------------------------------------


def test_the_v1_api_takes_an_api_key_header_or_a_bearer_key(v1: AzureApi) -> None:
    v1.server.sim.api_key = "right-key"
    del v1.session.headers["api-key"]
    v1.call("GET", "/batches", headers={"api-key": "right-key"})
    v1.call("GET", "/batches", headers={"Authorization": "Bearer right-key"})

    missing = v1.error("GET", "/batches", 401)
    assert missing["code"] == "401" and "missing subscription key" in missing["message"]
    wrong = v1.error("GET", "/batches", 401, headers={"api-key": "wrong-key"})
    assert "invalid subscription key" in wrong["message"]
    assert "wrong-key" not in wrong["message"] and "right-key" not in wrong["message"]


def test_the_dated_api_takes_only_the_api_key_header(dated: AzureApi) -> None:
    dated.server.sim.api_key = "right-key"
    del dated.session.headers["api-key"]
    error = dated.error("GET", "/batches", 401, headers={"Authorization": "Bearer right-key"})
    assert error["code"] == "401"
    dated.error("GET", "/batches", 401, headers={"api-key": "wrong-key"})
    dated.call("GET", "/batches", headers={"api-key": "right-key"})


@pytest.mark.parametrize("version", [None, ""])
def test_the_dated_api_without_an_api_version_is_a_400(dated: AzureApi, version: str) -> None:
    params = {} if version is None else {"api-version": version}
    response = dated.request("GET", "/batches", version=None, params=params)
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "MissingApiVersionParameter",
            "message": "The api-version query parameter (?api-version=) is required for all "
            "requests.",
        }
    }


def test_the_dated_api_refuses_an_unsupported_api_version(dated: AzureApi) -> None:
    error = dated.error("GET", "/batches", 400, version="2023-05-15")
    assert "api-version" in error["message"] and "2023-05-15" in error["message"]


@pytest.mark.parametrize("version", ["2024-10-21", "2025-03-01-preview", "2024-07-01-preview"])
def test_the_dated_api_accepts_the_batch_api_versions(dated: AzureApi, version: str) -> None:
    assert dated.call("GET", "/batches", version=version)["object"] == "list"


def test_the_v1_api_needs_no_api_version(v1: AzureApi) -> None:
    assert v1.call("GET", "/batches")["object"] == "list"


# --- Payloads -----------------------------------------------------------------------------------


def test_an_azure_batch_has_iso_times_capitalised_statuses_and_no_model_or_usage(
    azure: AzureApi,
) -> None:
    batch = azure.create_batch([chat_request("a"), chat_request("b")])
    assert batch["status"] == "Validating"
    assert batch["created_at"] == START_ISO
    assert unix(batch["expires_at"]) == START + DAYS
    assert all(batch[key] is None for key in TIMES if key not in ("created_at", "expires_at"))
    assert batch["endpoint"] is None
    assert batch["request_counts"] == {"total": None, "completed": None, "failed": None}
    assert batch["output_file_id"] == "" and batch["error_file_id"] == ""
    assert "model" not in batch and "usage" not in batch

    [listed] = azure.call("GET", "/batches")["data"]
    assert listed["endpoint"] == "/v1/chat/completions", "list pages show the endpoint"
    assert listed["status"] == "Validating"
    assert listed["request_counts"] == {"total": None, "completed": None, "failed": None}

    seen = {}
    for seconds in (2, 2, 2):
        azure.advance(seconds)
        current = azure.batch(batch["id"])
        seen[current["status"]] = current
    assert list(seen) == ["InProgress", "Finalizing", "Completed"]
    running = seen["InProgress"]
    assert running["endpoint"] == "/v1/chat/completions"
    assert unix(running["in_progress_at"]) == START + 2
    assert running["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
    assert running["output_file_id"] == "" and running["error_file_id"] == ""
    done = seen["Completed"]
    assert unix(done["finalizing_at"]) == START + 4
    assert unix(done["completed_at"]) == START + 6
    assert done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert all(done[key] is None or ISO.match(done[key]) for key in TIMES)
    assert "model" not in done and "usage" not in done


def test_a_completed_azure_batch_has_an_empty_error_file(azure: AzureApi) -> None:
    batch = azure.create_batch([chat_request("a")])
    azure.advance(10)
    batch = azure.batch(batch["id"])
    assert batch["status"] == "Completed"
    assert len(parse_jsonl(azure.content(batch["output_file_id"]))) == 1
    error_file = azure.call("GET", f"/files/{batch['error_file_id']}")
    assert error_file["bytes"] == 0
    assert error_file["purpose"] == "batch_output"
    assert azure.content(batch["error_file_id"]) == b""


def test_an_azure_batch_whose_requests_failed_has_them_in_its_error_file(azure: AzureApi) -> None:
    batch = azure.create_batch([chat_request("ok"), chat_request("will-fail")])
    azure.advance(10)
    batch = azure.batch(batch["id"])
    [line] = parse_jsonl(azure.content(batch["error_file_id"]))
    assert line["custom_id"] == "will-fail"


def fail_at_validation(azure: AzureApi, batch_id: str) -> None:
    azure.advance(2)


def expire_while_running(azure: AzureApi, batch_id: str) -> None:
    azure.advance(3)  # one of the two requests is done
    assert azure.control("POST", f"/batches/{batch_id}/expire").status_code == 200


def cancel_while_validating(azure: AzureApi, batch_id: str) -> None:
    assert azure.call("POST", f"/batches/{batch_id}/cancel")["status"] == "Cancelling"
    azure.advance(5)


@pytest.mark.parametrize(
    ("finish", "status", "stamp"),
    [
        (fail_at_validation, "Failed", "failed_at"),
        (expire_while_running, "Expired", "expired_at"),
        (cancel_while_validating, "Cancelled", "cancelled_at"),
    ],
    ids=["failed", "expired", "cancelled"],
)
def test_every_finished_azure_batch_has_an_error_file(
    azure: AzureApi, finish: Any, status: str, stamp: str
) -> None:
    rows = [chat_request("a"), chat_request("b")]
    if status == "Failed":
        rows.append(chat_request("a", method="GET"))  # a duplicate id and a bad method
    batch = azure.create_batch(rows)
    finish(azure, batch["id"])
    batch = azure.batch(batch["id"])
    assert batch["status"] == status
    assert unix(batch[stamp]) > START
    assert batch["error_file_id"].startswith("file-")
    content = azure.content(batch["error_file_id"])
    if status == "Expired":
        assert batch["output_file_id"].startswith("file-")
        [not_run] = parse_jsonl(content)
        assert not_run["error"]["code"] == "batch_expired"
    else:
        assert batch["output_file_id"] == ""
        assert content == b"", "nothing ran, so nothing failed"


def test_azure_file_objects_carry_an_iso_created_at(azure: AzureApi) -> None:
    uploaded = azure.upload(b"{}\n")
    assert uploaded["created_at"] == START_ISO
    assert uploaded["expires_at"] == START + 30 * DAYS
    assert azure.call("GET", f"/files/{uploaded['id']}") == uploaded
    assert azure.call("GET", "/files")["data"] == [uploaded]


def test_azure_errors_have_a_code_and_a_message(azure: AzureApi) -> None:
    assert azure.error("GET", "/batches/batch_unknown", 404)["code"] == "404"
    file_id = azure.upload(jsonl([chat_request("a")]))["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    error = azure.error("POST", "/batches", 400, json={**body, "completion_window": "48h"})
    assert error["code"] == "invalid_value"
    assert error["param"] == "completion_window"


# --- Azure's limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"expires_after.anchor": "created_at", "expires_after.seconds": str(14 * DAYS)},
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": str(30 * DAYS)},
    ],
    ids=["dotted", "brackets"],
)
def test_an_azure_upload_takes_an_expiry_of_14_to_30_days(
    azure: AzureApi, fields: dict[str, str]
) -> None:
    uploaded = azure.upload(b"{}\n", **fields)
    seconds = int(next(v for k, v in fields.items() if k.endswith(("seconds]", ".seconds"))))
    assert uploaded["expires_at"] == START + seconds


@pytest.mark.parametrize("seconds", [3600, 14 * DAYS - 1, 30 * DAYS + 1])
def test_an_azure_expiry_outside_14_to_30_days_is_a_400_naming_the_param(
    azure: AzureApi, seconds: int
) -> None:
    fields = {"expires_after.anchor": "created_at", "expires_after.seconds": str(seconds)}
    error = azure.error(
        "POST",
        "/files",
        400,
        files={"file": ("input.jsonl", b"{}\n")},
        data={"purpose": "batch", **fields},
    )
    assert error["param"] == "expires_after"
    assert "expires_after" in error["message"] and "1209600" in error["message"]

    body = azure.create_body(
        [chat_request("a")], output_expires_after={"anchor": "created_at", "seconds": seconds}
    )
    error = azure.error("POST", "/batches", 400, json=body)
    assert error["param"] == "output_expires_after"
    assert "output_expires_after" in error["message"]


def test_an_azure_batch_takes_an_output_expiry_of_14_days(azure: AzureApi) -> None:
    batch = azure.create_batch(
        [chat_request("a")], output_expires_after={"anchor": "created_at", "seconds": 14 * DAYS}
    )
    azure.advance(10)
    batch = azure.batch(batch["id"])
    output_file = azure.call("GET", f"/files/{batch['output_file_id']}")
    assert output_file["expires_at"] == unix(batch["completed_at"]) + 14 * DAYS


def test_the_openai_dialect_keeps_its_bracket_fields_and_one_hour_minimum(api: Api) -> None:
    fields = {"expires_after.anchor": "created_at", "expires_after.seconds": "3600"}
    error = api.error(
        "POST", "/files", 400, files={"file": ("a", b"{}\n")}, data={"purpose": "batch", **fields}
    )
    assert error["code"] == "unknown_parameter"
    uploaded = api.upload(
        b"{}\n", **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    )
    assert uploaded["expires_at"] == START + 3600


def test_the_request_limit_per_file_is_the_dialects_unless_given() -> None:
    limits = {}
    for dialect in ("openai", *AZURE_DIALECTS):
        sim = Simulator(dialect=dialect)
        limits[dialect] = sim.max_requests_per_file
        sim.close()
    assert limits == {"openai": 50_000, "azure": 100_000, "azure-legacy": 100_000}
    sim = Simulator(dialect="azure", max_requests_per_file=3)
    assert sim.max_requests_per_file == 3
    sim.close()


@pytest.mark.parametrize("dialect", AZURE_DIALECTS)
def test_a_file_over_the_request_limit_fails_the_batch_with_too_many_tasks(
    clock: FakeClock, dialect: str
) -> None:
    clock.now = START
    with SimulatorServer(clock=clock, dialect=dialect, max_requests_per_file=3) as server:
        azure = AzureApi(server)
        fits = azure.create_batch([chat_request(f"a{i}") for i in range(3)])
        over = azure.create_batch([chat_request(f"b{i}") for i in range(4)])
        azure.advance(2)
        assert azure.batch(fits["id"])["status"] == "InProgress"
        over = azure.batch(over["id"])
        assert over["status"] == "Failed"
        [error] = over["errors"]["data"]
        assert error["code"] == "too_many_tasks"
        assert "3" in error["message"]
        azure.session.close()


def test_the_openai_dialect_names_a_too_long_file_too_many_requests() -> None:
    clock = FakeClock()
    sim = Simulator(clock=clock, max_requests_per_file=1)
    try:
        content = jsonl([chat_request("a"), chat_request("b")])
        upload = sim.create_file(filename="in.jsonl", purpose="batch", content=content)
        batch = sim.create_batch(
            {
                "input_file_id": upload["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
        )
        clock.now += 2
        [error] = sim.get_batch(batch["id"])["errors"]["data"]
        assert error["code"] == "too_many_requests"
    finally:
        sim.close()


@pytest.mark.parametrize(
    ("second_model", "line"), [("deployment-b", 2), (None, 2)], ids=["other", "missing"]
)
def test_lines_naming_another_deployment_fail_the_batch_with_model_mismatch(
    azure: AzureApi, second_model: str | None, line: int
) -> None:
    rows = [chat_request("a"), chat_request("b"), chat_request("c")]
    for row in rows:
        row["body"]["model"] = "deployment-a"
    if second_model is None:
        del rows[1]["body"]["model"]
    else:
        rows[1]["body"]["model"] = second_model
    batch = azure.create_batch(rows)
    azure.advance(2)
    batch = azure.batch(batch["id"])
    assert batch["status"] == "Failed"
    [error] = batch["errors"]["data"]
    assert (error["code"], error["line"]) == ("model_mismatch", line)


def test_an_azure_file_whose_urls_differ_from_the_endpoint_fails_with_url_mismatch(
    azure: AzureApi,
) -> None:
    batch = azure.create_batch([chat_request("a"), chat_request("b", url="/v1/embeddings")])
    azure.advance(2)
    batch = azure.batch(batch["id"])
    assert [e["code"] for e in batch["errors"]["data"]] == ["url_mismatch"]


# --- The enqueued-token limit -------------------------------------------------------------------


def limit_message(model: str, limit: int) -> str:
    return (
        f"Enqueued token limit reached for {model} in organization org-sim. Limit: {limit} "
        "enqueued tokens. Please try again once some in_progress batches have been completed."
    )


def test_over_the_token_limit_an_openai_batch_is_created_then_fails_after_validating(
    api: Api,
) -> None:
    response = api.control("POST", "/limits", {"enqueued_token_limit": 250})
    assert response.json() == {"enqueued_token_limit": 250, "enqueued_tokens": {}}
    first = api.create_batch(token_rows(2, prefix="first"))
    limits = api.control("GET", "/limits").json()
    assert limits["enqueued_tokens"] == {"gpt-4o-mini": 200}

    over = api.create_batch(token_rows(1, prefix="over"))
    assert over["status"] == "validating" and over["errors"] is None
    other_model = api.create_batch(token_rows(2, model="gpt-4.1", prefix="other"))
    api.advance(2)

    over = api.batch(over["id"])
    assert over["status"] == "failed"
    assert over["errors"]["data"] == [
        {
            "code": "token_limit_exceeded",
            "message": limit_message("gpt-4o-mini", 250),
            "line": None,
            "param": None,
        }
    ]
    assert api.batch(first["id"])["status"] == "in_progress"
    assert api.batch(other_model["id"])["status"] == "in_progress"
    assert api.control("GET", "/limits").json()["enqueued_tokens"] == {
        "gpt-4o-mini": 200,
        "gpt-4.1": 200,
    }


def test_the_token_limit_frees_up_as_batches_finish_and_can_be_cleared(api: Api) -> None:
    api.control("POST", "/limits", {"enqueued_token_limit": 300})
    first = api.create_batch(token_rows(2, prefix="first"))
    exactly = api.create_batch(token_rows(1, prefix="exactly"))  # 300: at the limit, not past
    api.advance(10)
    assert api.batch(first["id"])["status"] == "completed"
    assert api.batch(exactly["id"])["status"] == "completed"

    again = api.create_batch(token_rows(3, prefix="again"))
    api.advance(2)
    assert api.batch(again["id"])["status"] == "in_progress"

    cleared = api.control("POST", "/limits", {"enqueued_token_limit": None}).json()
    assert cleared["enqueued_token_limit"] is None
    big = api.create_batch(token_rows(10, prefix="big"))
    api.advance(2)
    assert api.batch(big["id"])["status"] == "in_progress"


def test_over_the_token_limit_azure_refuses_the_create_and_creates_nothing(
    azure: AzureApi,
) -> None:
    assert azure.control("POST", "/limits", {"enqueued_token_limit": 250}).status_code == 200
    azure.create_batch(token_rows(2, model="deployment-a", prefix="first"))
    body = azure.create_body(token_rows(1, model="deployment-a", prefix="over"))

    error = azure.error("POST", "/batches", 400, json=body)
    assert error == {
        "code": "token_limit_exceeded",
        "message": limit_message("deployment-a", 250),
    }
    assert len(azure.call("GET", "/batches")["data"]) == 1
    assert azure.control("GET", "/state").json()["batches"] == 1


@pytest.mark.parametrize(
    "body",
    [{"enqueued_token_limit": -1}, {"enqueued_token_limit": "10"}, {"queue": 1}, [1]],
)
def test_a_bad_limit_is_a_400_and_changes_nothing(api: Api, body: Any) -> None:
    api.control("POST", "/limits", {"enqueued_token_limit": 7})
    assert api.control("POST", "/limits", body).status_code == 400
    assert api.control("GET", "/limits").json()["enqueued_token_limit"] == 7


def test_the_token_limit_given_at_start_comes_back_on_reset() -> None:
    sim = Simulator(enqueued_token_limit=5_000)
    try:
        assert sim.state()["enqueued_token_limit"] == 5_000
        sim.set_limits({"enqueued_token_limit": None})
        assert sim.limits()["enqueued_token_limit"] is None
        sim.reset()
        assert sim.limits() == {"enqueued_token_limit": 5_000, "enqueued_tokens": {}}
    finally:
        sim.close()
