"""The sync worker: `manage.py sync_batches` syncs once, `--loop` keeps going until SIGTERM.

Each pass is `services.sync_pass()` (see `batches/services/sync.py`) and writes one line. Several
workers may share one PostgreSQL database, on one host or several; on SQLite run one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import Error as DatabaseFailure
from django.db import close_old_connections, connections

from batches import services
from batches.openai_client import OpenAIError

# Waits after a database error: doubling from the first to the last (seconds).
DB_BACKOFF_MIN = 1.0
DB_BACKOFF_MAX = 60.0
# The longest Retry-After the client waits out itself; longer ones end the pass.
CLIENT_MAX_WAIT = 10.0
# The client logs every call; the worker's log is one line a pass unless asked (-v 2).
CLIENT_LOGGER = "batches.openai_client"


class Command(BaseCommand):
    help = (
        "Copy batches from the OpenAI API into the local cache, once or in a loop (--loop). "
        "Several loops may share a PostgreSQL database; on SQLite run only one."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--loop", action="store_true", help="keep running until SIGTERM")
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.SYNC_INTERVAL_SECONDS,
            help="seconds between passes with --loop (default %(default)s)",
        )
        parser.add_argument(
            "--full", action="store_true", help="walk every page of the list (the first pass)"
        )
        parser.add_argument("--max-passes", type=int, default=0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        if not options["loop"]:
            try:
                result = services.batches_sync(full=options["full"])
            except OpenAIError as error:
                raise CommandError(str(error)) from error
            self.stdout.write(f"Synced: {result}")
            return
        self.run_loop(
            interval=max(0.0, options["interval"]),
            full=options["full"],
            max_passes=options["max_passes"],
            verbose=options["verbosity"] >= 2,
        )

    def run_loop(self, *, interval: float, full: bool, max_passes: int, verbose: bool) -> None:
        """Pass, wait, repeat; a failing database or upstream makes the wait longer, never the
        end. Signal handlers and the client's log level are put back on the way out."""
        restore = self._install_signal_handlers()
        client_logger = logging.getLogger(CLIENT_LOGGER)
        client_level = client_logger.level
        if not verbose:
            client_logger.setLevel(logging.WARNING)
        try:
            client = services.get_client()
            # Long Retry-After waits belong to the worker's backoff, which a SIGTERM cuts short,
            # not to the client, which sleeps through it.
            client.config = dataclasses.replace(
                client.config, max_retry_wait=min(client.config.max_retry_wait, CLIENT_MAX_WAIT)
            )
            passes = 0
            db_failures = 0
            while not self.stopping.is_set():
                wait = interval
                try:
                    _fresh_connection()
                    result = services.sync_pass(client=client, full=full, stop=self.stopping.is_set)
                except DatabaseFailure as error:
                    db_failures += 1
                    wait = max(
                        interval, min(DB_BACKOFF_MAX, DB_BACKOFF_MIN * 2 ** (db_failures - 1))
                    )
                    self.stderr.write(
                        f"sync failed: database error ({type(error).__name__}: {error}); "
                        f"next try in {wait:.0f} s"
                    )
                    _drop_connections()
                else:
                    db_failures = 0
                    full = False
                    self._report(result)
                    wait = max(interval, result.backoff_seconds)
                passes += 1
                if max_passes and passes >= max_passes:
                    break
                self.stopping.wait(wait)
        finally:
            client_logger.setLevel(client_level)
            restore()
        self.stdout.write("Sync worker stopped.")

    def _report(self, result: services.PassResult) -> None:
        if result.failed:
            self.stderr.write(f"sync failed: {result}")
        else:
            self.stdout.write(f"sync: {result}")

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # only the main thread may set handlers; stop() still works
        saved = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

        return restore

    def _stop(self, signum: int, frame: Any) -> None:
        self.stdout.write(f"Received signal {signum}; stopping after this step.")
        self.stopping.set()


def _fresh_connection() -> None:
    """What Django does around each request: drop connections that are broken or too old."""
    if not any(conn.in_atomic_block for conn in connections.all(initialized_only=True)):
        close_old_connections()


def _drop_connections() -> None:
    """After a database error, start the next pass on a new connection."""
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:
            continue  # a test's transaction; closing it would break the test, not heal anything
        with contextlib.suppress(DatabaseFailure):
            conn.close()
