# Issue 19 (connection restrictions fail closed): filled in by the change that needs it.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0016_strangers'),
    ]

    operations = []
