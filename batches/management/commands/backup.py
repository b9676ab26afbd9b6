"""`manage.py backup DIR`: the database, the data folder and the key files, into a new folder.

Safe while the web and worker processes run (docs/backup.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from batches.services import backup


class Command(BaseCommand):
    help = (
        "Back up the database, the data folder (result copies, staged uploads) and the key "
        "files into DIR, a folder that does not exist yet. Safe while batchweb runs."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory", type=Path, help="a new (or empty) folder")
        parser.add_argument(
            "--method",
            choices=["auto", "native", "json"],
            default="auto",
            help="auto: SQLite's backup API, or pg_dump on PostgreSQL when installed, else "
            "json; native: never json; json: Django's dumpdata (any database, slower)",
        )
        parser.add_argument("--database", default="default", help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = backup.backup_create(
                target=options["directory"], method=options["method"], using=options["database"]
            )
        except backup.BackupError as error:
            raise CommandError(str(error)) from None
        for warning in result.warnings:
            self.stderr.write(self.style.WARNING(f"Warning: {warning}"))
        self.stdout.write(str(result))
