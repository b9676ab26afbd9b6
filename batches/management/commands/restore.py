"""`manage.py restore DIR`: put a backup back, replacing the database, the data folder's files
and the key files. Stop the web and worker processes first (docs/backup.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from batches.services import backup


class Command(BaseCommand):
    help = (
        "Restore a backup made by `manage.py backup`: replaces the database, the files of the "
        "data folder and the key files. Stop the web and worker processes first."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory", type=Path, help="the backup's folder")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="do not ask for confirmation",
        )
        parser.add_argument("--database", default="default", help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        source: Path = options["directory"]
        try:
            manifest = backup.backup_read(source)
        except backup.BackupError as error:
            raise CommandError(str(error)) from None
        if options["interactive"]:
            database = connections[options["database"]].settings_dict["NAME"]
            answer = input(
                f"This replaces the database {database} and the files in {settings.DATA_DIR} "
                f"with the backup of {manifest['created_at']}. Web and worker processes must be "
                "stopped. Type 'yes' to go on: "
            )
            if answer.strip().lower() != "yes":
                raise CommandError("Restore cancelled; nothing was changed.")
        try:
            result = backup.backup_restore(source=source, using=options["database"])
        except backup.BackupError as error:
            raise CommandError(str(error)) from None
        for warning in result.warnings:
            self.stderr.write(self.style.WARNING(f"Warning: {warning}"))
        self.stdout.write(str(result))
