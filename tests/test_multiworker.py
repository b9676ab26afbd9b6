"""Two sync workers and a web process against one PostgreSQL database and the simulator, with
batches moving on.

Two `manage.py sync_batches --loop` processes and a gunicorn web process share the test
database while the simulator's clock advances, new batches appear, one batch is cancelled and
one expires; meanwhile a signed-in person reads the list, its live rows and running batches'
pages (which refresh from upstream on their own), and presses "Sync now". A WSGI wrapper around
the simulator logs every list and retrieve call with the process that made it (each uses its own
API key). Then: no batch is retrieved twice by the workers within its shortest refresh interval
(so never twice under one claim), only one worker walks the list at a time, the cache never
moves a batch back whoever wrote it, every page answered, and every upstream batch ends up
cached with its final state.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from django.contrib.auth.models import Group, User
from django.db import connection

from batches.models import STATUS_RANK, Batch
from simulator import SimulatorApp, SimulatorServer

ROOT = Path(__file__).resolve().parent.parent
WEB_KEY = "sk-web"
WORKER_KEYS = {"sk-worker-1", "sk-worker-2"}
# The workers' schedule, short enough for a test that lasts seconds.
SHORTEST_INTERVAL = 0.5
WORKER_SETTINGS = f"""
from tests.settings import *  # noqa: F403

SYNC_REFRESH_MIN_SECONDS = {SHORTEST_INTERVAL}
SYNC_REFRESH_MAX_SECONDS = 2.0
SYNC_LEASE_SECONDS = 10.0
SYNC_CLAIM_SIZE = 5  # small claims, so the two workers take turns
SYNC_BACKOFF_MIN_SECONDS = 0.5
OPENAI_CONNECT_TIMEOUT = 2.0
OPENAI_READ_TIMEOUT = 5.0
"""

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="several workers need PostgreSQL (row and advisory locks); on SQLite one worker "
        "is the limit. Set DATABASE_URL=postgres://... to run it.",
    ),
    pytest.mark.django_db(transaction=True),
]


@dataclass(frozen=True)
class Call:
    at: float  # wall clock, as the workers' schedule
    worker: str
    operation: str  # "list" or "retrieve"
    batch_id: str = ""
    after: str = ""


class CallLog:
    """WSGI middleware: note each `/v1/batches` list and retrieve call as it arrives."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def wrap(self, app: Any) -> Any:
        def logged(environ: dict[str, Any], start_response: Any) -> Any:
            path = environ.get("PATH_INFO", "")
            if environ.get("REQUEST_METHOD") == "GET" and path.startswith("/v1/batches"):
                worker = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
                rest = path.removeprefix("/v1/batches").strip("/")
                with self._lock:
                    if not rest:
                        after = parse_qs(environ.get("QUERY_STRING", "")).get("after", [""])[0]
                        self.calls.append(Call(time.time(), worker, "list", after=after))
                    elif "/" not in rest:
                        self.calls.append(Call(time.time(), worker, "retrieve", batch_id=rest))
            return app(environ, start_response)

        return logged

    def of(self, operation: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.operation == operation]


class SimClock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def call_log(monkeypatch) -> CallLog:
    log = CallLog()
    monkeypatch.setattr("simulator.server.SimulatorApp", lambda sim: log.wrap(SimulatorApp(sim)))
    return log


@pytest.fixture
def server(call_log: CallLog) -> Iterator[SimulatorServer]:
    with SimulatorServer(host="127.0.0.1", port=0, clock=SimClock()) as server:
        yield server


def database_url() -> str:
    """The test database, which pytest-django named `test_<name>`, for the worker processes."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{db.get('USER') or 'postgres'}{password}@{host}:{port}/{db['NAME']}"


def start_worker(n: int, server: SimulatorServer, tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "multiworker_settings",
        "DATABASE_URL": database_url(),
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": f"sk-worker-{n}",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "manage.py", "sync_batches", "--loop", "--interval", "0.2"]
    command += ["--max-passes", "500"]  # a bound; the test stops them with SIGTERM long before
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / f"worker{n}.out").open("w"),
        stderr=(tmp_path / f"worker{n}.err").open("w"),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_web(server: SimulatorServer, tmp_path: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "multiworker_settings",
        "DATABASE_URL": database_url(),
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": WEB_KEY,
        "DJANGO_SECURE_COOKIES": "false",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "gunicorn", "batchweb.wsgi", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", "2", "--threads", "2", "--no-control-socket"]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "web.out").open("w"),
        stderr=(tmp_path / "web.err").open("w"),
    )


def signed_in(base: str) -> requests.Session:
    """A browser-like session on the web process, signed in through the login form."""
    deadline = time.monotonic() + 20
    http = requests.Session()
    while True:
        try:
            page = http.get(f"{base}/accounts/login/", timeout=5)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = http.post(
        f"{base}/accounts/login/",
        data={"username": "pat", "password": "pw-pat-123", "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=10,
    )
    assert response.url.rstrip("/") == base, response.url
    return http


def csrf(http: requests.Session, base: str) -> dict[str, str]:
    return {"csrfmiddlewaretoken": http.cookies["csrftoken"]}


def upstream_batches(server: SimulatorServer) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        page = server.sim.list_batches(after=after, limit=100)
        found.update({item["id"]: item for item in page["data"]})
        if not page["has_more"]:
            return found
        after = page["data"][-1]["id"]


def state_of(payload: dict[str, Any]) -> tuple[str, int, int]:
    counts = payload.get("request_counts") or {}
    return payload["status"], counts.get("completed") or 0, counts.get("failed") or 0


def cached() -> dict[str, tuple[str, int, int]]:
    rows = Batch.objects.values_list("openai_id", "status", "request_completed", "request_failed")
    return {i: (status, done or 0, failed or 0) for i, status, done, failed in rows}


def test_two_workers_never_fetch_a_batch_twice_at_once_lose_nothing_and_never_go_back(
    server: SimulatorServer, call_log: CallLog, tmp_path: Path
):
    sim = server.sim
    # 50 long batches running, then 150 finished ones that are newer, so the running ones sit
    # on the list's second page and are kept fresh by retrieves, not by the walk.
    running = sim.seed_batches(count=50, status="in_progress", requests=1000)
    sim.seed_batches(count=150, status="completed")
    (tmp_path / "multiworker_settings.py").write_text(WORKER_SETTINGS)
    pat = User.objects.create_user("pat", password="pw-pat-123")
    pat.groups.add(Group.objects.get(name="Operators"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = start_web(server, tmp_path, port)
    workers = [start_worker(n, server, tmp_path) for n in (1, 2)]
    seen: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    pages: list[tuple[str, int]] = []
    converged = False
    try:
        http = signed_in(base)
        started = time.monotonic()
        step = 0
        while time.monotonic() - started < 45:
            time.sleep(0.2)
            step += 1
            if step > 10:  # let both start and the first full walk land, then move the world
                sim.advance(15)
            if step == 20:
                sim.seed_batches(count=10, status="validating", requests=40)
                sim.cancel_batch(running["first_id"])
                sim.expire_batch(running["last_id"])
            # A person at the same time: the list, its live rows, a running batch's page (which
            # retrieves it from the web process), and once "Sync now" (a walk from the web).
            live = Batch.objects.filter(running=True).order_by("?").first()
            urls = ["/", "/?status=running"]
            if live:
                urls += [
                    f"/connections/default/batches/{live.openai_id}/",
                    f"/batches/live/?ids={live.pk}:x",
                ]
            for url in urls:
                pages.append((url, http.get(base + url, timeout=20).status_code))
            if step == 15:
                response = http.post(f"{base}/batches/sync/", data=csrf(http, base), timeout=30)
                pages.append(("/batches/sync/", response.status_code))
            for batch_id, state in cached().items():
                if not seen[batch_id] or seen[batch_id][-1] != state:
                    seen[batch_id].append(state)
            upstream = upstream_batches(server)
            everything_ended = all(
                p["status"] in {"completed", "failed", "expired", "cancelled"}
                for p in upstream.values()
            )
            if everything_ended and cached() == {i: state_of(p) for i, p in upstream.items()}:
                converged = True
                break
        for process in [*workers, web]:
            process.send_signal(signal.SIGTERM)
        for process in [*workers, web]:
            process.wait(timeout=15)
    finally:
        for process in [*workers, web]:
            if process.poll() is None:
                process.kill()
                process.wait()
    outputs = {n: (tmp_path / f"worker{n}.out").read_text() for n in (1, 2)}
    errors = {n: (tmp_path / f"worker{n}.err").read_text() for n in (1, 2)}
    web_errors = (tmp_path / "web.err").read_text()
    diagnostics = f"stdout: {outputs}\nstderr: {errors}\nweb: {web_errors[-3000:]}"

    # Nothing lost: every upstream batch is cached with its final state.
    assert converged, f"the cache did not catch up within 45 s\n{diagnostics}"
    assert len(cached()) == 210
    assert all(w.returncode == 0 for w in workers), diagnostics
    assert all(out.rstrip().endswith("Sync worker stopped.") for out in outputs.values())
    failed = [e for e in errors.values() if "database error" in e or "Traceback" in e]
    assert not failed, diagnostics
    # The web process answered every page while the workers wrote underneath it.
    assert pages and all(status == 200 for _url, status in pages), pages
    assert "Traceback" not in web_errors, diagnostics

    # Nothing moved back, in any state the test saw.
    for batch_id, states in seen.items():
        steps = [(STATUS_RANK[s], done + failed) for s, done, failed in states]
        assert steps == sorted(steps), f"{batch_id} went back: {states}"

    # No batch fetched twice at once: retrieves of one batch are at least the shortest refresh
    # interval apart (a claim holds it while it is fetched, and storing it reschedules it).
    retrieves = [c for c in call_log.of("retrieve") if c.worker in WORKER_KEYS]
    assert any(c.worker == WEB_KEY for c in call_log.of("retrieve")), "the web process fetched"
    by_batch: dict[str, list[Call]] = defaultdict(list)
    for call in retrieves:
        by_batch[call.batch_id].append(call)
    for batch_id, calls in by_batch.items():
        gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
        assert min(gaps, default=1.0) >= SHORTEST_INTERVAL * 0.9, (batch_id, calls)
    assert {call.worker for call in retrieves} == {"sk-worker-1", "sk-worker-2"}, "both worked"
    assert len(by_batch) >= 50

    # One lister at a time: a walk's later pages follow its own first page with no other
    # worker's list call in between.
    lists = [c for c in call_log.of("list") if c.worker in WORKER_KEYS]
    later_pages = [(a, b) for a, b in itertools.pairwise(lists) if b.after]
    assert later_pages, "no walk went past its first page"
    assert all(a.worker == b.worker for a, b in later_pages), lists

    # The simulator counted the same calls.
    calls = sim.state()["calls"]
    assert calls["listBatches"] == len(call_log.of("list"))
    assert calls["retrieveBatch"] == len(call_log.of("retrieve"))
