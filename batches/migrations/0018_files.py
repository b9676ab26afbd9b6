# Issue 19 (files and staging): written by hand.
#
# Submission.staged_path held whatever path a form's token made, so a row may name a file
# anywhere the server can write (`/tmp/x.jsonl`, `../results/<batch>/output.jsonl`). The code
# now checks every stored path before it opens or removes one (batches/storage.py); this clears
# the paths that check would refuse, so no row keeps one. The files are left where they are: a
# path outside data/staging was never the server's to remove. The check is written out here
# (not imported) so this migration keeps its meaning when storage.py changes.

import re
from pathlib import Path

from django.conf import settings
from django.db import migrations

STAGED_NAME = re.compile(r"[A-Za-z0-9_-]{1,160}\.jsonl")


def _inside_staging(value: str, root: Path) -> bool:
    path = Path(value)
    if not path.is_absolute() or STAGED_NAME.fullmatch(path.name) is None:
        return False
    try:
        return path.resolve().parent == root
    except (OSError, RuntimeError):
        return False


def forget_staged_paths_outside_staging(apps, schema_editor):
    Submission = apps.get_model("batches", "Submission")
    root = (Path(settings.DATA_DIR) / "staging").resolve()
    outside = [
        pk
        for pk, value in Submission.objects.using(schema_editor.connection.alias)
        .exclude(staged_path="")
        .values_list("pk", "staged_path")
        .iterator()
        if not _inside_staging(value, root)
    ]
    for start in range(0, len(outside), 500):
        Submission.objects.using(schema_editor.connection.alias).filter(
            pk__in=outside[start : start + 500]
        ).update(staged_path="")


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0017_visibility"),
    ]

    operations = [
        migrations.RunPython(forget_staged_paths_outside_staging, migrations.RunPython.noop),
    ]
