"""`manage.py connection_test SLUG`: list one page of batches through a connection and say what
worked, or why not and what to change. Exits 1 when the test fails."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from batches.models import Connection
from batches.services import connections as connection_services

from .connection_add import format_result


class Command(BaseCommand):
    help = "Test a connection: list one page of its batches (nothing is created or changed)."
    # Runs even when the system checks find errors (an unreadable stored key, say): this command
    # is how such a problem is looked into or worked around, and it reports key problems itself.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("slug", help="the connection's slug (see the Connections page)")

    def handle(self, *args: Any, **options: Any) -> None:
        connection = Connection.objects.filter(slug=options["slug"]).first()
        if connection is None:
            known = ", ".join(Connection.objects.values_list("slug", flat=True)) or "none yet"
            raise CommandError(f"No connection with the slug {options['slug']!r} (slugs: {known}).")
        result = connection_services.connection_test(connection=connection)
        if not result.ok:
            raise CommandError(format_result(result))
        self.stdout.write(self.style.SUCCESS(format_result(result)))
