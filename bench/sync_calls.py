"""Count the upstream calls of the sync worker against the simulator, at 10,000 batches.

Budgets (issue 6):
  (a) 10,000 cached batches, 50 of them running, nothing new upstream: one pass costs at most
      1 list call plus 1 retrieve per due running batch;
  (b) a full sync of 10,000 batches costs exactly 100 list calls.

    .venv/bin/python bench/sync_calls.py                 # a temporary SQLite database
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/sync_calls.py
                                    # a temporary database made next to that one, dropped after

The simulator runs in this process on loopback, on a frozen clock so nothing changes unless the
script says so; calls are counted by its per-operation counter. Exits non-zero over budget.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator import SimulatorServer  # noqa: E402 - after the path is set


@contextmanager
def scratch_database() -> Iterator[str]:
    """A DATABASE_URL for a database that exists only for this run."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
            yield f"sqlite:///{tmp}/bench.sqlite3"
        return
    import psycopg

    name = f"batchweb_bench_{os.getpid()}"
    parts = urlsplit(url)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


class FrozenClock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=50)
    args = parser.parse_args()
    with (
        scratch_database() as database_url,
        SimulatorServer(clock=FrozenClock()) as server,
    ):
        os.environ.update(
            {
                "DATABASE_URL": database_url,
                "DJANGO_SETTINGS_MODULE": "batchweb.settings",
                "DJANGO_SECRET_KEY": "bench-only-not-a-secret-" + "x" * 32,
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": server.base_url,
                "LOG_LEVEL": "WARNING",
            }
        )
        return run(server, batches=args.batches, running=args.running)


def run(server: SimulatorServer, *, batches: int, running: int) -> int:
    import django

    django.setup()
    logging.getLogger("batches").setLevel(logging.WARNING)
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from batches import services
    from batches.models import Batch

    call_command("migrate", verbosity=0)
    sim = server.sim
    # The running batches are the oldest (1,000 requests each: they began 500 s ago), so they
    # sit deep in the list and only retrieves can keep them fresh.
    sim.seed_batches(count=running, status="in_progress", requests=1000)
    sim.seed_batches(count=batches - running, status="completed")
    client = services.get_client()  # the default connection: OPENAI_* set above

    def calls() -> tuple[int, int]:
        counted = sim.state()["calls"]
        return counted["listBatches"], counted["retrieveBatch"]

    def measured_pass(full: bool = False) -> tuple[int, int, services.PassResult]:
        lists, retrieves = calls()
        from batches.models import default_connection

        result = services.sync_pass(connection=default_connection(), client=client, full=full)
        after = calls()
        return after[0] - lists, after[1] - retrieves, result

    print(f"database: {connection.vendor}; simulator: {server.base_url}")
    failures = []

    # (b) The first pass of a fresh worker is a full sync.
    full_lists, full_retrieves, full = measured_pass()
    expected_pages = -(-batches // 100)
    print(
        f"(b) full sync of {Batch.objects.count():,} batches: {full_lists} list calls, "
        f"{full_retrieves} retrieves, {full.duration:.1f} s  [budget: exactly {expected_pages}"
        " list calls]"
    )
    if not full.full or full_lists != expected_pages or Batch.objects.count() != batches:
        failures.append("(b) full sync")

    # (a) All running batches due, nothing new upstream.
    Batch.objects.running().update(next_refresh_at=timezone.now())
    due = Batch.objects.due_for_refresh(timezone.now()).count()
    lists, retrieves, result = measured_pass()
    print(
        f"(a) pass, {batches:,} cached, {running} running, {due} due: {lists} list call, "
        f"{retrieves} retrieves, {result.duration:.2f} s  [budget: <= 1 + {due}]"
    )
    if lists > 1 or retrieves > due or result.refreshed != due or result.full:
        failures.append("(a) pass with every running batch due")

    # (a) The next pass: nothing due any more.
    lists, retrieves, result = measured_pass()
    print(
        f"(a) next pass, 0 due: {lists} list call, {retrieves} retrieves, "
        f"{result.duration:.2f} s  [budget: <= 1 + 0]"
    )
    if lists > 1 or retrieves > 0:
        failures.append("(a) pass with nothing due")

    # (a) Half of them due.
    half = list(Batch.objects.running().values_list("pk", flat=True)[: running // 2])
    Batch.objects.filter(pk__in=half).update(next_refresh_at=timezone.now())
    lists, retrieves, result = measured_pass()
    print(
        f"(a) pass, {len(half)} due: {lists} list call, {retrieves} retrieves, "
        f"{result.duration:.2f} s  [budget: <= 1 + {len(half)}]"
    )
    if lists > 1 or retrieves > len(half):
        failures.append("(a) pass with half due")

    # (b) The rare full sync again, on a warm cache (the worker's every SYNC_FULL_EVERY_SECONDS).
    lists, retrieves, result = measured_pass(full=True)
    print(
        f"(b) full sync again, cache warm: {lists} list calls, {retrieves} retrieves, "
        f"{result.duration:.1f} s  [budget: exactly {expected_pages} list calls]"
    )
    if lists != expected_pages:
        failures.append("(b) full sync, cache warm")

    if failures:
        print("OVER BUDGET: " + ", ".join(failures))
        return 1
    print("all within budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
