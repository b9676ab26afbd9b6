"""Connections (2/3): an installation of the previous release keeps working. Its OPENAI_*
settings become the connection "default" (configured by the environment), and everything it
cached belongs to it.
"""

from django.db import migrations


def create_default_connection(apps, schema_editor):
    Connection = apps.get_model("batches", "Connection")
    connection, _ = Connection.objects.get_or_create(
        slug="default", defaults={"name": "OpenAI", "from_settings": True}
    )
    for name in ("Batch", "Event", "Submission"):
        apps.get_model("batches", name).objects.update(connection=connection)
    SyncState = apps.get_model("batches", "SyncState")
    # The one row of the previous release becomes the default connection's.
    first = SyncState.objects.order_by("pk").first()
    SyncState.objects.exclude(pk=first.pk if first else None).delete()
    SyncState.objects.update(connection=connection)
    apps.get_model("batches", "BatchTally").objects.update(connection_id=connection.pk)


class Migration(migrations.Migration):
    dependencies = [("batches", "0003_connections")]

    operations = [migrations.RunPython(create_default_connection, migrations.RunPython.noop)]
