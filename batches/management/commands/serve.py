"""`manage.py serve` (what `make run` calls): everything a single machine needs, in one command.

It prepares the database and static files, then runs the web server (gunicorn) and the sync
worker as child processes, as the Procfile does in production. With no OPENAI_API_KEY it starts
batchweb's simulator of the OpenAI API too (demo mode) and prints a demo sign-in. The demo's
simulator starts with a month of a small team's batches (simulator/history.py), made by a few
local people who cannot sign in, so the spend page, filters and estimates have something to show.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from batches.models import AuthStyle, Connection, Dialect
from batches.roles import SUBMITTERS
from simulator.history import PEOPLE as DEMO_PEOPLE

DEMO_USERNAME = "demo"
# The simulator's phases last 2 s + 1 s a request + 2 s at speed 1: the 20-line sample would be
# done in 24 s, between two looks of a page (every 5 s) and the worker (every 3 s). At 0.4 it
# takes about a minute, long enough to watch it validate, progress and finalize.
DEMO_SPEED = 0.4
DEMO_KEY = "sk-demo-simulator"
DEMO_KEY_ENV = "BATCHWEB_DEMO_KEY"
# Days of sample history the demo's simulator starts with (drawn once per state file).
DEMO_HISTORY_DAYS = 30


class Command(BaseCommand):
    help = "Run batchweb on one machine: web server, sync worker, and a simulator in demo mode."
    # Checked in handle(): in demo mode the missing key is expected, not worth a warning.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--simulator-port", type=int, default=8765)
        parser.add_argument(
            "--simulator-speed",
            type=float,
            default=DEMO_SPEED,
            help="how much faster than real time simulated batches run in demo mode "
            "(below 1: slower; the default makes the 20-line sample take about a minute)",
        )
        parser.add_argument("--demo", action="store_true", help="use the simulator even with a key")

    def handle(self, *args: Any, **options: Any) -> None:
        demo = options["demo"] or not settings.OPENAI_API_KEY
        if not demo:
            self.check(display_num_errors=False)
        env = dict(os.environ)
        env.setdefault("DJANGO_SECURE_COOKIES", "false")  # served over plain http on this machine
        self.stdout.write("Preparing the database…")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)

        children: list[subprocess.Popen] = []
        try:
            if demo:
                _demo_people()
                base_url = self._start_simulator(options, children)
                _demo_connection(base_url)
                env.update(
                    {
                        DEMO_KEY_ENV: DEMO_KEY,
                        "BATCHWEB_DEMO": "true",
                        "BATCHWEB_SYNC_INTERVAL": env.get("BATCHWEB_SYNC_INTERVAL", "3"),
                    }
                )
            else:
                # A demo tried before the key was set: its simulator is not running now.
                Connection.objects.filter(slug="demo", key_env=DEMO_KEY_ENV).update(enabled=False)
            # The worker writes a line every pass: to its own file, so this console keeps the
            # sign-in and any real problem in view.
            worker_log = Path(settings.DATA_DIR) / "worker.log"
            children.append(
                _spawn([sys.executable, "manage.py", "sync_batches", "--loop"], env, log=worker_log)
            )
            bind = f"{options['host']}:{options['port']}"
            children.append(
                _spawn(
                    [
                        *(sys.executable, "-m", "gunicorn", "batchweb.wsgi", "--bind", bind),
                        *("--workers", env.get("WEB_CONCURRENCY", "2"), "--threads", "4"),
                        *("--timeout", "120", "--graceful-timeout", "5"),
                        # One machine may run several: don't share ~/.gunicorn/gunicorn.ctl.
                        "--no-control-socket",
                    ],
                    env,
                )
            )
            _wait_for_port(options["host"], options["port"])
            shown_host = "127.0.0.1" if options["host"] == "0.0.0.0" else options["host"]  # noqa: S104
            self._greet(demo, f"http://{shown_host}:{options['port']}/")
            self._supervise(children)
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

    def _start_simulator(self, options: dict[str, Any], children: list) -> str:
        port = options["simulator_port"]
        state = Path(settings.DATA_DIR) / "simulator-state.json"
        children.append(
            _spawn(
                [
                    sys.executable,
                    "-m",
                    "simulator",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--speed",
                    str(options["simulator_speed"]),
                    "--api-key",
                    DEMO_KEY,
                    "--state-file",
                    str(state),
                    "--history-days",
                    str(DEMO_HISTORY_DAYS),
                ],
                dict(os.environ),
            )
        )
        _wait_for_port("127.0.0.1", port)
        return f"http://127.0.0.1:{port}/v1"

    def _greet(self, demo: bool, url: str) -> None:
        User = get_user_model()
        lines = [
            "",
            f"batchweb is running at {url}  (Ctrl-C stops it)",
            f"  The sync worker's log: {Path(settings.DATA_DIR) / 'worker.log'}",
        ]
        if demo:
            password = secrets.token_urlsafe(9)
            user = User.objects.filter(username=DEMO_USERNAME).first()
            if user is None:
                user = User.objects.create_superuser(DEMO_USERNAME, "", password)
            else:
                user.set_password(password)
                user.is_superuser = user.is_staff = user.is_active = True
                user.save()
            lines += [
                "",
                "DEMO MODE: no OPENAI_API_KEY is set, so batchweb talks to its built-in simulator.",
                f"  Sign in as  {DEMO_USERNAME}  with password  {password}  (new each start)",
                f"  The Demo connection has a month of sample batches by {_people_text()}.",
                "  Try: New batch -> upload static/samples/sample-chat.jsonl -> watch it run.",
                "  To use OpenAI: put OPENAI_API_KEY=sk-... in .env and run `make run` again.",
            ]
        elif not User.objects.filter(is_superuser=True).exists():
            lines += [
                "",
                "No admin account yet. In another terminal run:",
                "  .venv/bin/python manage.py createsuperuser",
            ]
        self.stdout.write("\n".join(lines) + "\n")

    def _supervise(self, children: list[subprocess.Popen]) -> None:
        stop = {"now": False}

        def _stop(signum: int, frame: Any) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop["now"]:
            for child in children:
                if child.poll() is not None:
                    raise CommandError(
                        f"{' '.join(child.args[1:4])} stopped with exit code {child.returncode}; "
                        "see its messages above."
                    )
            time.sleep(0.5)
        self.stdout.write("Stopping…")


def _demo_people() -> list[Any]:
    """The people the demo's sample history names (metadata `batchweb_user`): local accounts
    without a usable password, Submitters, so the sync attributes the batches to them. Accounts
    that exist already are left as they are."""
    User = get_user_model()
    submitters, _ = Group.objects.get_or_create(name=SUBMITTERS)
    people = []
    for username in DEMO_PEOPLE:
        user, created = User.objects.get_or_create(
            username=username, defaults={"first_name": username.capitalize()}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
            user.groups.add(submitters)
        people.append(user)
    return people


def _people_text() -> str:
    return ", ".join(DEMO_PEOPLE[:-1]) + " and " + DEMO_PEOPLE[-1]


def _demo_connection(base_url: str) -> Connection:
    """The connection "Demo", pointing at this start's simulator (its port may differ from the
    last start's); its key is the simulator's, passed to the web and worker processes."""
    connection, _ = Connection.objects.update_or_create(
        slug="demo",
        defaults={
            "name": "Demo",
            "base_url": base_url,
            "dialect": Dialect.OPENAI,
            "auth_style": AuthStyle.BEARER,
            "key_env": DEMO_KEY_ENV,
            "enabled": True,
        },
    )
    return connection


def _spawn(command: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    output = log.open("a") if log else None
    return subprocess.Popen(  # noqa: S603
        command, env=env, cwd=settings.BASE_DIR, stdout=output, stderr=output
    )


def _wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise CommandError(f"Nothing answered on {host}:{port} within {timeout:.0f} s.")
