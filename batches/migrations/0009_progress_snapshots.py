"""The history of running batches' request counts, for finish-time estimates."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0007_roles_and_labels"),
    ]

    operations = [
        migrations.CreateModel(
            name="ProgressSnapshot",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField()),
                ("completed", models.IntegerField(blank=True, null=True)),
                ("failed", models.IntegerField(blank=True, null=True)),
                ("total", models.IntegerField(blank=True, null=True)),
                (
                    "batch",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="progress_snapshots",
                        to="batches.batch",
                    ),
                ),
            ],
            options={
                "ordering": ("at", "id"),
                "indexes": [
                    models.Index(fields=["batch", "at"], name="progress_batch_at"),
                    models.Index(fields=["at"], name="progress_at"),
                ],
            },
        ),
    ]
