"""`manage.py costs_recompute`: compute the stored cost of finished batches again, after price
overrides changed or a new `genai-prices` release brought new rates."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from batches.services import costs


class Command(BaseCommand):
    help = (
        "Compute the stored cost of finished batches again (after price overrides changed). "
        "By default only batches whose cost was computed before; --all includes the others."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--all",
            action="store_true",
            dest="everything",
            help="also batches whose cost was never computed",
        )

    def handle(self, *args: Any, everything: bool = False, **options: Any) -> None:
        count = costs.costs_recompute(everything=everything)
        self.stdout.write(f"Computed the cost of {count:,} batch{'es' if count != 1 else ''}.")
