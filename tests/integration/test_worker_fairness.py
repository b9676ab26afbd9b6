"""The sync worker as a real process with two connections: a slow upstream never holds up the
other connection's passes (each connection has a thread of its own), and SIGTERM stops both."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator import SimulatorServer

ROOT = Path(__file__).resolve().parents[2]
RUN_SECONDS = 6.0
SLOW_SECONDS = 2.0


def manage(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        **kwargs,
    )


@pytest.fixture
def servers():
    with (
        SimulatorServer(host="127.0.0.1", port=0, api_key="sk-slow") as slow,
        SimulatorServer(host="127.0.0.1", port=0, api_key="sk-quick") as quick,
    ):
        yield slow, quick


def test_a_slow_connection_does_not_slow_down_the_other(servers, tmp_path):
    slow, quick = servers
    slow.sim.seed_batches(count=2, status="completed")
    quick.sim.seed_batches(count=3, status="completed")
    slow.sim.set_faults({"latency": SLOW_SECONDS})
    database = tmp_path / "fair.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "batchweb.settings",
        "DJANGO_SECRET_KEY": "fairness-test-only-not-a-secret-" + "x" * 32,
        "DATABASE_URL": f"sqlite:///{database}",
        "BATCHWEB_DATA_DIR": str(tmp_path),
        "OPENAI_API_KEY": "",  # no default connection: only the two below
        "SLOW_KEY": "sk-slow",
        "QUICK_KEY": "sk-quick",
        "LOG_LEVEL": "WARNING",
    }
    manage("migrate", "--noinput", env=env)
    for name, server in (("slow", slow), ("quick", quick)):
        manage(
            "shell",
            "-c",
            "from batches.models import Connection; Connection.objects.create("
            f"name={name!r}, slug={name!r}, base_url={server.base_url!r}, "
            f"key_env={name.upper() + '_KEY'!r})",
            env=env,
        )

    out = (tmp_path / "worker.out").open("w")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "sync_batches", "--loop", "--interval", "0.2"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(RUN_SECONDS)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    lines = (tmp_path / "worker.out").read_text().splitlines()

    quick_passes = sum(line.startswith("sync quick: ") for line in lines)
    slow_passes = sum(line.startswith("sync slow: ") for line in lines)
    assert code == 0, lines
    assert "Sync worker stopped." in lines
    # Each slow pass waits SLOW_SECONDS on its list call; the quick one goes on meanwhile.
    assert slow_passes <= RUN_SECONDS / SLOW_SECONDS + 1, lines
    assert quick_passes >= 3 * (slow_passes + 1), lines
    with sqlite3.connect(database) as db:
        counts = dict(
            db.execute(
                "SELECT c.slug, COUNT(b.id) FROM batches_connection c "
                "LEFT JOIN batches_batch b ON b.connection_id = c.id GROUP BY c.slug"
            ).fetchall()
        )
    assert counts["quick"] == 3 and counts["slow"] == 2
