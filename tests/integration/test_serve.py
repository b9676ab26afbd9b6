"""The README's run command in demo mode: `manage.py serve` with no key starts the simulator,
the sync worker and gunicorn, prints a sign-in, and a newcomer can run a batch end to end."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "static" / "samples" / "sample-chat.jsonl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_until(process: subprocess.Popen, pattern: str, timeout: float) -> re.Match:
    """Read the command's output line by line until `pattern` matches (bounded)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"{pattern!r} not printed; output was:\n{''.join(seen)}")


def csrf_token(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def test_demo_mode_serves_a_working_dashboard_and_stops_cleanly(tmp_path):
    port, sim_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "DJANGO_", "BATCHWEB_", "DATABASE_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchweb.settings",
            "DJANGO_SECRET_KEY": "serve-test-only-not-a-secret-" + "x" * 32,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "BATCHWEB_DATA_DIR": str(tmp_path),
            "BATCHWEB_SYNC_INTERVAL": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    command = [sys.executable, "manage.py", "serve", "--port", str(port)]
    command += ["--simulator-port", str(sim_port), "--simulator-speed", "40"]
    serve = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        password = read_until(serve, r"Sign in as\s+demo\s+with password\s+(\S+)", 90).group(1)
        http = requests.Session()
        login = http.get(f"{base}/accounts/login/", timeout=10)
        listed = http.post(
            f"{base}/accounts/login/",
            data={"username": "demo", "password": password,
                  "csrfmiddlewaretoken": csrf_token(login.text)},
            timeout=10,
        )  # fmt: skip
        assert "Demo mode." in listed.text
        assert "built-in simulator" in listed.text

        # The newcomer's round trip: the sample file through the form, confirmed, run, done.
        form = http.get(f"{base}/batches/new/", timeout=10).text
        token = re.search(r'name="submission_token" value="([^"]+)"', form).group(1)
        with SAMPLE.open("rb") as sample:
            checked = http.post(
                f"{base}/batches/new/",
                data={"csrfmiddlewaretoken": csrf_token(form), "submission_token": token,
                      "completion_window": "24h", "label": "demo run"},
                files={"input_file": ("sample-chat.jsonl", sample, "application/jsonl")},
                timeout=30,
            )  # fmt: skip
        assert "The file passed every check" in checked.text
        created = http.post(
            checked.url, data={"csrfmiddlewaretoken": csrf_token(checked.text)}, timeout=30
        )
        assert re.search(r"/connections/demo/batches/batch_\w+/$", created.url), created.url
        deadline = time.monotonic() + 30
        while "completed with failures" not in created.text and time.monotonic() < deadline:
            time.sleep(0.5)
            created = http.get(created.url, timeout=10)
        assert "completed with failures" in created.text  # the sample has 2 lines that fail
        assert "20 / 20" in created.text
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        finally:
            if serve.poll() is None:
                serve.kill()
    assert serve.returncode == 0
    for each in (port, sim_port):  # the web server and the simulator are gone
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", each)) != 0
