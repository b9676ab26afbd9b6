# Issue 19 (identity): filled in by the change that needs it.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0014_cache_generation'),
    ]

    operations = []
