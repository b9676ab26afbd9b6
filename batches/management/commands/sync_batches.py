"""The sync worker: `manage.py sync_batches` runs one pass, `--loop` keeps going."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from batches import services
from batches.openai_client import OpenAIError


class Command(BaseCommand):
    help = "Copy batches from the OpenAI API into the local cache (once, or in a loop)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--loop", action="store_true", help="keep running until SIGTERM")
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.SYNC_INTERVAL_SECONDS,
            help="seconds between passes with --loop (default %(default)s)",
        )
        parser.add_argument("--full", action="store_true", help="walk every page of the list")
        parser.add_argument("--max-passes", type=int, default=0, help=argparse_hidden())

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        if not options["loop"]:
            try:
                result = services.batches_sync(full=options["full"])
            except OpenAIError as error:
                raise CommandError(str(error)) from error
            self.stdout.write(f"Synced: {result}")
            return
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        passes = 0
        full = options["full"]
        while not self.stopping.is_set():
            self.run_pass(full=full)
            full = False
            passes += 1
            if options["max_passes"] and passes >= options["max_passes"]:
                break
            self.stopping.wait(options["interval"])
        self.stdout.write("Sync worker stopped.")

    def run_pass(self, *, full: bool) -> None:
        started = time.monotonic()
        try:
            result = services.batches_sync(full=full)
        except OpenAIError as error:
            self.stderr.write(f"sync failed: {error}")
            return
        self.stdout.write(f"sync: {result} in {time.monotonic() - started:.1f} s")

    def _stop(self, signum: int, frame: Any) -> None:
        self.stdout.write(f"Received signal {signum}; stopping after this pass.")
        self.stopping.set()


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS
