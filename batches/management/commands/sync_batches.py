"""The sync worker: `manage.py sync_batches` syncs once, `--loop` keeps going until SIGTERM.

Each pass is `sync.sync_pass()` for one connection (see `batches/services/sync.py`) and
writes one line. Each connection has its own loop (a thread of its own when there are several),
so one upstream's outage, backoff or slowness never delays another's refreshes. Several workers
may share one PostgreSQL database, on one host or several; on SQLite run one worker.

Every few seconds the worker also sends the notifications that are due
(`notifications.notifications_deliver`), from the command's own thread: whatever the connections'
loops are doing, and never stopping them when a mail server or receiver fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import Error as DatabaseFailure
from django.db import close_old_connections, connections
from django.utils import timezone

from batches.models import Connection
from batches.openai_client import OpenAIClient, OpenAIError
from batches.services import connections as connection_services
from batches.services import notifications, sync

# Waits after a database error: doubling from the first to the last (seconds).
DB_BACKOFF_MIN = 1.0
DB_BACKOFF_MAX = 60.0
# The longest Retry-After the client waits out itself; longer ones end the pass.
CLIENT_MAX_WAIT = 10.0
# The client logs every call; the worker's log is one line a pass unless asked (-v 2).
CLIENT_LOGGER = "batches.openai_client"

logger = logging.getLogger(__name__)


# How often a worker with several connections looks for connections added, enabled or disabled.
ROSTER_SECONDS = 30.0
# How often the worker sends the notifications that are due (batches that ended, retries).
NOTIFY_EVERY_SECONDS = 5.0


class Command(BaseCommand):
    help = (
        "Copy batches from every enabled connection into the local cache, once or in a loop "
        "(--loop). Several loops may share a PostgreSQL database; on SQLite run only one."
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
        parser.add_argument(
            "--connection",
            action="append",
            default=[],
            metavar="SLUG",
            help="only this connection (repeat for several; default: every enabled one)",
        )
        parser.add_argument("--max-passes", type=int, default=0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        self.slugs = options["connection"]
        unknown = set(self.slugs) - set(
            Connection.objects.filter(slug__in=self.slugs).values_list("slug", flat=True)
        )
        if unknown:
            raise CommandError(f"No connection with the slug {', '.join(sorted(unknown))}.")
        if not options["loop"]:
            self.sync_once(full=options["full"])
            return
        self.run_loop(
            interval=max(0.0, options["interval"]),
            full=options["full"],
            max_passes=options["max_passes"],
            verbose=options["verbosity"] >= 2,
        )

    def roster(self) -> list[Connection]:
        """The connections to sync: the enabled ones (or those named), except the connection
        configured by the environment while it has no key (demo mode, or a team that uses
        only connections of its own)."""
        rows = Connection.objects.filter(enabled=True)
        if self.slugs:
            rows = Connection.objects.filter(slug__in=self.slugs)
        return [c for c in rows.order_by("pk") if not (c.from_settings and not c.has_key())]

    def sync_once(self, *, full: bool) -> None:
        """Every connection in turn; one that fails does not stop the others."""
        failures = []
        for connection in self.roster():
            try:
                result = sync.batches_sync(connection=connection, full=full)
            except OpenAIError as error:
                failures.append(f"{connection.slug}: {error}")
                self.stderr.write(f"Sync of {connection.slug} failed: {error}")
            else:
                self.stdout.write(f"Synced {connection.slug}: {result}")
        self.deliver_notifications()
        if failures:
            raise CommandError("Sync failed for " + "; ".join(failures))

    def run_loop(self, *, interval: float, full: bool, max_passes: int, verbose: bool) -> None:
        """Pass, wait, repeat, for every connection; a failing database or upstream makes the
        wait longer, never the end. With several connections each runs in a thread of its own,
        so one that is slow or down never delays another's refreshes. Signal handlers and the
        client's log level are put back on the way out."""
        restore = self._install_signal_handlers()
        client_logger = logging.getLogger(CLIENT_LOGGER)
        client_level = client_logger.level
        if not verbose:
            client_logger.setLevel(logging.WARNING)
        options = {"interval": interval, "full": full, "max_passes": max_passes}
        self.next_notify_at = 0.0
        try:
            roster = self.roster()
            if len(roster) <= 1 and (max_passes or self.slugs):
                # One connection, bounded: no thread needed (and tests see their transaction).
                # The loop sends the notifications between its passes.
                if roster:
                    ConnectionLoop(self, roster[0], notify=True, **options).run()
                else:
                    self.deliver_notifications()
            else:
                self._supervise(options)
        finally:
            client_logger.setLevel(client_level)
            restore()
        self.stdout.write("Sync worker stopped.")

    def _supervise(self, options: dict[str, Any]) -> None:
        """Keep one thread per connection in the roster, until SIGTERM (or, with --max-passes,
        until every thread has made its passes)."""
        loops: dict[int, ConnectionLoop] = {}
        while not self.stopping.is_set():
            wanted = {c.pk: c for c in self.roster()}
            for pk, loop in list(loops.items()):
                if pk not in wanted or not loop.thread.is_alive():
                    loop.stop.set()
                    if not loop.thread.is_alive():
                        del loops[pk]
            for pk, connection in wanted.items():
                if pk not in loops:
                    loops[pk] = ConnectionLoop(self, connection, **options)
                    loops[pk].start()
            if options["max_passes"] and not any(lp.thread.is_alive() for lp in loops.values()):
                break
            # This thread is idle between roster checks: it sends the notifications, every few
            # seconds, whatever the connections' threads are doing or waiting for.
            roster_at = time.monotonic() + (ROSTER_SECONDS if not options["max_passes"] else 0.2)
            while not self.stopping.is_set() and time.monotonic() < roster_at:
                self.maybe_deliver_notifications()
                wait = min(roster_at, self.next_notify_at) - time.monotonic()
                self.stopping.wait(max(0.05, wait))
            _fresh_connection()
        for loop in loops.values():
            loop.stop.set()
        for loop in loops.values():
            loop.thread.join(timeout=60)

    def maybe_deliver_notifications(self) -> None:
        """Send due notifications when NOTIFY_EVERY_SECONDS have passed since the last time."""
        if time.monotonic() < self.next_notify_at:
            return
        self.deliver_notifications()
        self.next_notify_at = time.monotonic() + NOTIFY_EVERY_SECONDS

    def deliver_notifications(self) -> None:
        """One round of `notifications_deliver`. Never raises: a failing mail server or
        database, or a bug in a sender, must not stop the sync."""
        try:
            _fresh_connection()
            result = notifications.notifications_deliver(stop=self.stopping.is_set)
        except DatabaseFailure as error:
            with self.output_lock:
                self.stderr.write(
                    f"notifications failed: database error ({type(error).__name__}: {error})"
                )
            _drop_connections()
        except Exception:
            logger.exception("notifications failed")
            with self.output_lock:
                self.stderr.write("notifications failed: unexpected error (see the log)")
        else:
            if result.claimed:
                with self.output_lock:
                    self.stdout.write(f"notifications: {result}")

    def report(self, connection: Connection, result: sync.PassResult) -> None:
        with self.output_lock:
            if result.failed:
                self.stderr.write(f"sync {connection.slug} failed: {result}")
            else:
                self.stdout.write(f"sync {connection.slug}: {result}")

    output_lock = threading.Lock()
    # When the loop next sends notifications (monotonic seconds; 0: at once).
    next_notify_at = 0.0

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


class ConnectionLoop:
    """The passes of one connection: in the caller's thread (`run`) or a thread of its own
    (`start`), until the command stops, the connection leaves the roster, or `max_passes`."""

    def __init__(
        self,
        command: Command,
        connection: Connection,
        *,
        interval: float,
        full: bool,
        max_passes: int,
        notify: bool = False,
    ) -> None:
        self.command = command
        # Whether this loop also sends notifications (when it runs in the command's thread).
        self.notify = notify
        self.connection = connection
        self.interval = interval
        self.full = full
        self.max_passes = max_passes
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run_in_thread, name=f"sync-{connection.slug}", daemon=True
        )

    def stopped(self) -> bool:
        return self.stop.is_set() or self.command.stopping.is_set()

    def start(self) -> None:
        self.thread.start()

    def _run_in_thread(self) -> None:
        try:
            self.run()
        finally:
            connections.close_all()  # this thread's own database connections

    def run(self) -> None:
        client = None
        passes = 0
        db_failures = 0
        while not self.stopped():
            wait = self.interval
            try:
                _fresh_connection()
                self.connection.refresh_from_db()  # key, URL or dialect may have changed
                client = self._client()
                result = sync.sync_pass(
                    connection=self.connection, client=client, full=self.full, stop=self.stopped
                )
            except OpenAIError as error:  # no usable key: recorded like an upstream failure
                result = sync.PassResult(error=str(error), errors=1)
                result.backoff_seconds = sync.record_upstream_failure(
                    connection=self.connection, error=error, now=timezone.now()
                )
                self.command.report(self.connection, result)
                wait = max(self.interval, result.backoff_seconds)
            except DatabaseFailure as error:
                db_failures += 1
                wait = max(
                    self.interval, min(DB_BACKOFF_MAX, DB_BACKOFF_MIN * 2 ** (db_failures - 1))
                )
                with self.command.output_lock:
                    self.command.stderr.write(
                        f"sync {self.connection.slug} failed: database error "
                        f"({type(error).__name__}: {error}); next try in {wait:.0f} s"
                    )
                _drop_connections()
            else:
                db_failures = 0
                self.full = False
                self.command.report(self.connection, result)
                wait = max(self.interval, result.backoff_seconds)
            passes += 1
            if self.notify:
                self.command.maybe_deliver_notifications()
            if self.max_passes and passes >= self.max_passes:
                break
            # Wake for either stop: the command's (SIGTERM) or this connection's.
            deadline = time.monotonic() + wait
            while not self.stopped() and time.monotonic() < deadline:
                if self.notify:
                    self.command.maybe_deliver_notifications()
                self.command.stopping.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    def _client(self) -> OpenAIClient:
        client = connection_services.get_client(connection=self.connection)
        # Long Retry-After waits belong to the worker's backoff, which a SIGTERM cuts short,
        # not to the client, which sleeps through it.
        client.config = dataclasses.replace(
            client.config, max_retry_wait=min(client.config.max_retry_wait, CLIENT_MAX_WAIT)
        )
        return client


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
