"""Fixtures for the integration tests: batchweb against the simulator over real HTTP.

One loopback simulator serves the whole session (starting one per test costs more than most
tests); an autouse fixture resets it, rewinds its clock and points the project's settings at it
before each test. The client's waits between retries are recorded instead of slept, so retry
tests are fast and can check what was waited.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batches.openai_client import ClientConfig, OpenAIClient
from simulator import Simulator, SimulatorServer

API_KEY = "sk-int"
# A whole second near the real now, so pages show sensible relative times.
START = float(int(time.time()))


class FakeClock:
    """The simulator's clock: it only moves when a test says so (``sim.advance``)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def chat_line(custom_id: str, text: str = "Hello there") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
    }


def write_jsonl(path: Path, count: int = 3) -> Path:
    path.write_text("".join(json.dumps(chat_line(f"req-{i}")) + "\n" for i in range(1, count + 1)))
    return path


def wait_until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass (a bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def calls(sim: Simulator, operation: str) -> int:
    """How many ``/v1`` requests the simulator received for one OpenAPI operationId."""
    return sim.state()["calls"][operation]


@pytest.fixture(scope="session")
def sim_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def sim_server(sim_clock: FakeClock) -> Iterator[SimulatorServer]:
    with SimulatorServer(host="127.0.0.1", port=0, api_key=API_KEY, clock=sim_clock) as server:
        yield server


@pytest.fixture(autouse=True)
def sim(sim_server: SimulatorServer, sim_clock: FakeClock, settings) -> Iterator[Simulator]:
    """The shared simulator, reset, with the project's settings pointing at it."""
    sim_server.sim.reset()
    sim_server.sim.api_key = API_KEY
    sim_clock.now = START
    settings.OPENAI_BASE_URL = sim_server.base_url
    settings.OPENAI_API_KEY = API_KEY
    settings.OPENAI_CONNECT_TIMEOUT = 2.0
    settings.OPENAI_READ_TIMEOUT = 5.0
    settings.OPENAI_PAGE_TIMEOUT = 5.0
    settings.OPENAI_MAX_RETRIES = 2
    yield sim_server.sim
    sim_server.sim.reset()


@pytest.fixture(autouse=True)
def waits(monkeypatch) -> list[float]:
    """Every wait between retries of any client built meanwhile, recorded instead of slept.

    Only the client's own ``sleep`` is replaced: the simulator's ``latency`` fault still sleeps.
    """
    recorded: list[float] = []
    original = OpenAIClient.__init__

    def init(client: OpenAIClient, *args: Any, **kwargs: Any) -> None:
        original(client, *args, **kwargs)
        if kwargs.get("sleep") is None:
            client.sleep = recorded.append

    monkeypatch.setattr(OpenAIClient, "__init__", init)
    return recorded


@pytest.fixture
def make_client(sim_server: SimulatorServer, waits: list[float]) -> Callable[..., OpenAIClient]:
    """Build a client for the simulator with chosen config; it records its waits in ``waits``."""

    def build(**config: Any) -> OpenAIClient:
        config.setdefault("api_key", API_KEY)
        config.setdefault("base_url", sim_server.base_url)
        config.setdefault("connect_timeout", 2.0)
        config.setdefault("read_timeout", 5.0)
        return OpenAIClient(ClientConfig(**config), sleep=waits.append)

    return build


@pytest.fixture
def uploaded_file_id(tmp_path: Path, make_client: Callable[..., OpenAIClient]) -> str:
    """A three-request chat JSONL file uploaded to the simulator with purpose ``batch``."""
    path = write_jsonl(tmp_path / "input.jsonl")
    with path.open("rb") as handle:
        return make_client().upload_file(fileobj=handle, filename="input.jsonl")["id"]
