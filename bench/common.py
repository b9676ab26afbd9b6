"""What the benchmarks that serve batchweb share: the environment they run it in, a realistic
cache of batches filled in bulk, a signed-in session, gunicorn started as `make run` starts it,
and `wrk` (Debian's package) run against it with its figures read back.

Seeding runs in a subprocess with the benchmark's settings (Django is set up there, never in the
measuring process), so each benchmark keeps one clean environment per database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

MODELS = [
    ("gpt-4o-mini", "/v1/chat/completions", Decimal("0.075"), Decimal("0.3")),
    ("gpt-4.1-mini", "/v1/chat/completions", Decimal("0.2"), Decimal("0.8")),
    ("gpt-4.1", "/v1/responses", Decimal("1"), Decimal("4")),
    ("o4-mini", "/v1/responses", Decimal("0.55"), Decimal("2.2")),
    ("text-embedding-3-small", "/v1/embeddings", None, None),
    ("gpt-4o", "/v1/chat/completions", Decimal("1.25"), Decimal("5")),
]
TERMINAL = ["completed"] * 14 + ["failed", "expired", "cancelled"]
RUNNING = ["in_progress"] * 6 + ["validating", "finalizing", "cancelling"]
TEAMS = ["search", "support", "evals", "growth", "research"]

# A Lua script for wrk: its figures as one JSON line (wrk's own --latency report has no p95).
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50": %d, "p95": %d, "p99": %d, '
    .. '"non2xx": %d, "socket_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


# Each request of a "drawn" figure asks for a URL no one asked for before (`_fresh=<thread>-<n>`
# added to its query string), so the page cache never has it: the page is drawn as it is after
# a write, with the rows that did not change still coming from the row cache.
WRK_FRESH = """
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
request = function()
  counter = counter + 1
  local sep = string.find(wrk.path, "?", 1, true) and "&" or "?"
  local fresh = "_fresh=" .. run .. "-" .. tostring(tid) .. "-" .. counter
  return wrk.format(nil, wrk.path .. sep .. fresh)
end
"""


class CountingUpstream:
    """Where the benchmark's OPENAI_BASE_URL points: a loopback port that accepts each
    connection, counts it and closes it at once, so every upstream call fails fast (as a closed
    port would) and the benchmark can say how many calls each page made."""

    def __init__(self) -> None:
        import socket
        import threading

        self.calls = 0
        self._lock = threading.Lock()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with self._lock:
                self.calls += 1
            connection.close()

    def close(self) -> None:
        self._socket.close()


def bench_env(work: Path) -> dict[str, str]:
    """The environment batchweb runs in for a benchmark: production settings (DEBUG off), a
    data directory and SQLite database in `work` unless DATABASE_URL names another, and an
    upstream that refuses connections at once (nothing leaves the machine)."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchweb.settings",
            "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
            "DJANGO_DEBUG": "false",
            "DJANGO_SECURE_COOKIES": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "BATCHWEB_DATA_DIR": str(work),
            "OPENAI_API_KEY": "sk-bench-unused",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        }
    )
    env.setdefault("DATABASE_URL", f"sqlite:///{work / 'db.sqlite3'}")
    return env


def setup_django() -> None:
    """In a seeding subprocess: Django with the settings bench_env() gave it."""
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()


def seed_batches(size: int, connections: int, *, running: int = 40, seed: int = 11) -> Any:
    """Fill the cache with `size` batches over the last 365 days on `connections` connections:
    20 people, 40 labels, six models, the newest `running` batches still running, the rest
    ended (mostly completed, some with failures), metadata as scripts set it, usage and stored
    costs. Replaces any batches there were. Returns the superuser "bench"."""
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.utils import timezone

    from batches.models import Batch, BatchTally, Connection, ProgressSnapshot, SpendRollup

    call_command("migrate", verbosity=0)
    Batch.objects.all().delete()
    SpendRollup.objects.all().delete()
    rng = random.Random(seed)
    conns = []
    for i in range(connections):
        # Upstream is a closed port: the key only lets the API try it and fall back to the cache.
        conn, _ = Connection.objects.update_or_create(
            slug=f"conn-{i}",
            defaults={
                "name": f"Project {i}",
                "base_url": "http://127.0.0.1:9",
                "key_env": "OPENAI_API_KEY",
            },
        )
        conns.append(conn)
    people = []
    for i in range(20):
        user, _ = User.objects.get_or_create(username=f"person{i:02d}")
        people.append(user)
    admin, _ = User.objects.get_or_create(username="bench", defaults={"is_superuser": True})
    admin.is_superuser = True
    admin.save()
    admin.groups.add(Group.objects.get(name="Admins"))
    now = timezone.now()
    span = 365 * 86400
    rows = []
    for i in range(size):
        model, endpoint, price_in, price_out = MODELS[rng.randrange(len(MODELS))]
        created = now - dt.timedelta(seconds=span * i / size + rng.random())
        is_running = i < running
        status = rng.choice(RUNNING) if is_running else rng.choice(TERMINAL)
        given, output = rng.randint(2_000, 4_000_000), rng.randint(0, 1_500_000)
        if endpoint == "/v1/embeddings":
            output = 0
        cost = list_cost = None
        if not is_running and price_in is not None:
            cost = (Decimal(given) * price_in + Decimal(output) * price_out) / 1_000_000
            cost = cost.quantize(Decimal("0.000001"))
            list_cost = cost * 2
        total = rng.choice([20, 100, 1_000, 5_000, 50_000])
        failed = 0 if rng.random() < 0.85 else rng.randint(1, total // 10 + 1)
        done = total - failed if status == "completed" else rng.randint(0, total - failed)
        label = f"job {rng.randrange(40)}" if rng.random() < 0.8 else ""
        creator = people[rng.randrange(len(people))] if rng.random() < 0.9 else None
        metadata: dict[str, str] = {}
        if label:
            metadata["job"] = label
        if rng.random() < 0.5:
            metadata["team"] = rng.choice(TEAMS)
        if creator is not None:
            metadata["batchweb_user"] = creator.username
        openai_id = f"batch_{i:08d}"
        batch = Batch(
            connection=conns[i % len(conns)],
            openai_id=openai_id,
            status=status,
            running=is_running,
            endpoint=endpoint,
            model=model,
            completion_window="24h",
            input_file_id=f"file-in-{i}",
            output_file_id="" if is_running else f"file-out-{i}",
            created_at=created,
            in_progress_at=created + dt.timedelta(minutes=1),
            expires_at=created + dt.timedelta(hours=24),
            completed_at=None if is_running else created + dt.timedelta(hours=2),
            request_total=total,
            request_completed=done,
            request_failed=failed,
            input_tokens=None if is_running else given,
            cached_tokens=None if is_running else given // 10,
            output_tokens=None if is_running else output,
            metadata=metadata,
            label=label,
            raw={"id": openai_id, "object": "batch", "status": status, "endpoint": endpoint},
            created_by=creator,
            synced_at=now,
            cost_usd=cost,
            list_cost_usd=list_cost,
            cost_computed_at=None if is_running else now,
            cost_note="" if cost is not None else "no batch price known",
        )
        batch.search_text = batch.build_search_text()
        rows.append(batch)
    Batch.objects.bulk_create(rows, batch_size=2000)
    BatchTally.rebuild()
    # The history the worker keeps of each batch in progress (a snapshot a minute or two while
    # its counts move), from which the list and its page estimate when it finishes.
    snapshots = []
    for batch in Batch.objects.filter(status="in_progress"):
        for step in range(30, -1, -2):
            share = (30 - step) / 30
            snapshots.append(
                ProgressSnapshot(
                    batch=batch,
                    at=now - dt.timedelta(minutes=step),
                    completed=round(batch.request_completed * share),
                    failed=round(batch.request_failed * share),
                    total=batch.request_total,
                )
            )
    ProgressSnapshot.objects.bulk_create(snapshots)
    return admin


def seed_results(batch: Any, lines: int, *, seed: int = 12) -> None:
    """A results table of `lines` requests for a finished batch, as ingestion leaves it: mostly
    answers, some HTTP errors, a few that never ran."""
    from django.utils import timezone

    from batches.models import ResultRow

    rng = random.Random(seed)
    rows = []
    for n in range(lines):
        roll = rng.random()
        ok = roll < 0.96
        never = roll > 0.995
        rows.append(
            ResultRow(
                batch=batch,
                custom_id=f"req-{n:06d}",
                input_line=n + 1,
                input_offset=n * 400,
                source="" if never else ("output" if ok else "error"),
                offset=None if never else n * 4000,
                ok=ok,
                status_code=None if never else (200 if ok else rng.choice([400, 429, 500])),
                error_code="" if ok or never else "rate_limit_exceeded",
                error_message="" if ok or never else "Rate limit reached for requests",
                request_preview=f"Summarise ticket {n}: the customer writes that the export…",
                answer_preview="" if not ok else f"The customer of ticket {n} cannot export a…",
                input_tokens=rng.randint(50, 900),
                output_tokens=rng.randint(10, 400) if ok else None,
            )
        )
    ResultRow.objects.bulk_create(rows, batch_size=2000)
    type(batch).objects.filter(pk=batch.pk).update(
        results_ingested_at=timezone.now(), request_total=lines
    )


def session_for(user: Any) -> str:
    """A signed-in session for `user`, as the sign-in page would make it; its key."""
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "batches.services.signin.PasswordBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def run_child(script: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `script` with `args` in a subprocess; its last line of output is a JSON object."""
    out = subprocess.run(
        [sys.executable, script, *args], env=env, capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode:
        raise RuntimeError(
            f"{Path(script).name} {' '.join(args)} failed:\n{out.stdout}{out.stderr}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn serving batchweb as `manage.py serve` (what `make run` calls) starts it: 2
    workers x 4 threads, on a free loopback port. A context manager; stops it on exit."""

    def __init__(self, env: dict[str, str], work: Path, workers: int = 2, threads: int = 4):
        self.env, self.work, self.workers, self.threads = env, work, workers, threads
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            env=self.env,
            cwd=ROOT,
            check=True,
        )
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "batchweb.wsgi"),
                *("--bind", f"127.0.0.1:{self.port}"),
                *("--workers", str(self.workers), "--threads", str(self.threads)),
                *("--timeout", "120", "--graceful-timeout", "5", "--no-control-socket"),
            ],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(self.work / "gunicorn.log").open("w"),
        )
        import requests

        for _ in range(150):
            try:
                requests.get(self.base + "/accounts/login/", timeout=10)
                return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer: " + self.log_tail())

    def __exit__(self, *exc: Any) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log_tail(self, chars: int = 3000) -> str:
        return (self.work / "gunicorn.log").read_text()[-chars:]

    def worker_cpu_seconds(self) -> float:
        """CPU time (user + system) the gunicorn workers have used so far: the server's own
        cost of what it served, which the machine's other work does not move."""
        assert self.process is not None
        pid = self.process.pid
        total = 0
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")

    def worker_memory(self) -> list[dict[str, float]]:
        """VmRSS and VmHWM (MB) of each gunicorn worker (the master's children)."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        found = []
        for child in children:
            status = Path(f"/proc/{child}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            found.append(
                {
                    "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
                    "hwm_mb": int(fields["VmHWM"].split()[0]) / 1024,
                }
            )
        return found


def wrk(
    url: str,
    *,
    headers: dict[str, str],
    connections: int,
    duration: float,
    fresh: bool = False,
) -> dict[str, float]:
    """Requests per second and latency percentiles (ms) of `url` under `connections` keep-alive
    connections for `duration` seconds; `fresh`: each request a URL never asked before
    (WRK_FRESH), so that no page cache answers it."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        # Each run's URLs are its own: a run that asked the URLs of the one before it (a
        # warm-up) would be answered from the page cache.
        run = f'local run = "{uuid.uuid4().hex[:12]}"\n'
        script.write(WRK_SCRIPT + (run + WRK_FRESH if fresh else ""))
    command = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections)]
    # A slow page at 50 connections may take seconds: wrk's default 2 s timeout would count
    # it as an error instead of measuring it.
    command += ["-d", f"{max(1, round(duration))}s", "--timeout", "30s", "-s", script.name]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    try:
        text = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    line = next(x for x in text.splitlines() if x.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    return {
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "p50": raw["p50"] / 1000,
        "p95": raw["p95"] / 1000,
        "p99": raw["p99"] / 1000,
        "requests": raw["requests"],
        "errors": raw["non2xx"] + raw["socket_errors"],
        "non2xx": raw["non2xx"],
    }
