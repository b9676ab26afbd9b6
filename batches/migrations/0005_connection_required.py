"""Connections (3/3): every batch belongs to a connection; ids are unique per connection."""

import django.db.models.deletion
from django.db import migrations, models

import batches.models.connections


class Migration(migrations.Migration):
    dependencies = [("batches", "0004_default_connection")]

    operations = [
        migrations.AlterField(
            model_name="batch",
            name="connection",
            field=models.ForeignKey(default=batches.models.connections.default_connection_id, on_delete=django.db.models.deletion.PROTECT, related_name="batches", to="batches.connection"),
        ),
        migrations.AlterField(
            model_name="submission",
            name="connection",
            field=models.ForeignKey(default=batches.models.connections.default_connection_id, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="batches.connection"),
        ),
        migrations.AlterField(
            model_name="syncstate",
            name="connection",
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="sync_state", to="batches.connection"),
        ),
        migrations.AlterField(
            model_name="batch",
            name="openai_id",
            field=models.CharField(max_length=128, verbose_name="batch id"),
        ),
        migrations.AddConstraint(
            model_name="batch",
            constraint=models.UniqueConstraint(fields=("connection", "openai_id"), name="one_batch_per_id"),
        ),
        migrations.AddIndex(
            model_name="batch",
            index=models.Index(fields=["connection", "-created_at", "-id"], name="batch_connection_newest"),
        ),
        migrations.AddIndex(
            model_name="batch",
            index=models.Index(fields=["openai_id"], name="batch_openai_id"),
        ),
        migrations.RemoveConstraint(model_name="batchtally", name="one_tally_per_key"),
        migrations.AddConstraint(
            model_name="batchtally",
            constraint=models.UniqueConstraint(fields=("connection_id", "status", "endpoint", "model", "creator_id"), name="one_tally_per_key"),
        ),
    ]
