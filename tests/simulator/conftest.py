"""Fixtures for the simulator tests: one loopback server for the session, a fake clock, and an
``api`` client that checks every answer (request id, status, OpenAPI shape).

The server is shared because starting one per test costs more than the tests themselves; an
autouse fixture resets its state, faults and clock before each test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulator import Simulator, SimulatorServer
from tests.openapi import validate_response

START = 1_760_000_000.0
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
TIMEOUT = 10


class FakeClock:
    """A clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def chat_request(custom_id: str, text: str = "Hello there", **overrides: Any) -> dict[str, Any]:
    row = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
    }
    row.update(overrides)
    return row


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


class Api:
    """A thin client over the simulator that asserts what every answer must carry."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Bearer sk-test"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(
            method, self.server.base_url + path, timeout=TIMEOUT, **kwargs
        )
        assert REQUEST_ID.match(response.headers["x-request-id"])
        return response

    def call(self, method: str, path: str, *, validate: bool = True, **kwargs: Any) -> Any:
        """A successful JSON call, its payload checked against the OpenAPI file."""
        response = self.request(method, path, **kwargs)
        assert response.status_code == 200, response.text
        payload = response.json()
        if validate:
            validate_response(method, "/v1" + path.split("?", 1)[0], payload)
        return payload

    def error(self, method: str, path: str, status: int, **kwargs: Any) -> dict[str, Any]:
        """A failing call; returns the inner error object after checking OpenAI's shape."""
        response = self.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        return error

    def upload(self, content: bytes, *, purpose: str = "batch", **fields: str) -> dict[str, Any]:
        return self.call(
            "POST",
            "/files",
            files={"file": ("input.jsonl", content, "application/jsonl")},
            data={"purpose": purpose, **fields},
        )

    def content(self, file_id: str) -> bytes:
        response = self.request("GET", f"/files/{file_id}/content")
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/octet-stream"
        validate_response("GET", f"/v1/files/{file_id}/content", response.text)
        return response.content

    def create_batch(
        self, rows: list[dict[str, Any]], endpoint: str = "/v1/chat/completions", **extra: Any
    ) -> dict[str, Any]:
        file_id = self.upload(jsonl(rows))["id"]
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
        return self.call("POST", "/batches", json={**body, **extra})

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self.call("GET", f"/batches/{batch_id}")

    def control(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(
            method, self.server.root_url + "/_sim" + path, json=body, timeout=TIMEOUT
        )

    def advance(self, seconds: float) -> None:
        response = self.control("POST", "/advance", {"seconds": seconds})
        assert response.status_code == 200, response.text

    def faults(self, **switches: Any) -> dict[str, Any]:
        response = self.control("POST", "/faults", switches)
        assert response.status_code == 200, response.text
        return response.json()

    def calls(self) -> dict[str, int]:
        return self.control("GET", "/state").json()["calls"]


@pytest.fixture(scope="session")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def server(clock: FakeClock) -> Iterator[SimulatorServer]:
    with SimulatorServer(clock=clock) as running:
        yield running


@pytest.fixture
def sim(server: SimulatorServer, clock: FakeClock) -> Iterator[Simulator]:
    """The shared simulator, reset before and after each test."""
    server.sim.reset()
    server.sim.api_key = None
    clock.now = START
    yield server.sim
    server.sim.reset()
    server.sim.api_key = None


@pytest.fixture
def api(server: SimulatorServer, sim: Simulator) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.session.close()
