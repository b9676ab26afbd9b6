# Issue 19 (nothing durable from strangers): filled in by the change that needs it.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0015_identity'),
    ]

    operations = []
