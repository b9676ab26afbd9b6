# Issue 19 (files and staging): filled in by the change that needs it.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0017_visibility'),
    ]

    operations = []
