"""The server around the simulator: the CLI, the state file, speed, and the WSGI app alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import requests

from simulator import Simulator, SimulatorApp, SimulatorServer
from tests.simulator.conftest import FakeClock, chat_request, jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_the_server_binds_loopback_and_reports_its_urls(server: SimulatorServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.root_url + "/v1" == server.base_url


def test_python_dash_m_simulator_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--speed", "10"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        state = requests.get(base_url.removesuffix("/v1") + "/_sim/state", timeout=5).json()
        assert state["speed"] == 10
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_the_state_file_keeps_files_and_batches_across_restarts(tmp_path: Path) -> None:
    clock = FakeClock()
    state_file = tmp_path / "sim.json"
    first = Simulator(clock=clock, state_file=state_file)
    content = jsonl([chat_request("a"), chat_request("b")])
    upload = first.create_file(filename="in.jsonl", purpose="batch", content=content)
    body = {
        "input_file_id": upload["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    running = first.create_batch(body)
    clock.now += 100
    finished = first.get_batch(running["id"])
    output = b"".join(first.file_content(finished["output_file_id"])[1].chunks())
    first.close()
    assert json.loads(state_file.read_text())["version"] == 1

    second = Simulator(clock=clock, state_file=state_file)
    assert second.get_batch(running["id"]) == finished
    assert b"".join(second.file_content(upload["id"])[1].chunks()) == content
    assert b"".join(second.file_content(finished["output_file_id"])[1].chunks()) == output
    second.close()


def test_speed_divides_every_phase() -> None:
    clock = FakeClock()
    sim = Simulator(clock=clock, speed=10)
    try:
        upload = sim.create_file(
            filename="in.jsonl", purpose="batch", content=jsonl([chat_request("a")] * 1)
        )
        batch = sim.create_batch(
            {
                "input_file_id": upload["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
        )
        clock.now += 0.2
        assert sim.get_batch(batch["id"])["status"] == "in_progress"
        clock.now += 0.3
        assert sim.get_batch(batch["id"])["status"] == "completed"
    finally:
        sim.close()


def test_the_wsgi_app_works_without_a_server() -> None:
    sim = Simulator()
    try:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/batches"}
        setup_testing_defaults(environ)
        seen = []
        body = SimulatorApp(sim)(environ, lambda status, headers: seen.append((status, headers)))
        [(status, headers)] = seen
        assert status == "401 Unauthorized"
        assert dict(headers)["x-request-id"].startswith("req_")
        assert json.loads(b"".join(body))["error"]["type"] == "invalid_request_error"
    finally:
        sim.close()
