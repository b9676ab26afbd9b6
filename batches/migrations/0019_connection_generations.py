# Issue 20: a cache generation per connection beside everyone's (batches/models/generation.py).
# Everyone's stays the row with id 1; a connection's row is made at its first raise.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0018_files'),
    ]

    operations = [
        migrations.AddField(
            model_name='cachegeneration',
            name='connection',
            field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='batches.connection'),
        ),
    ]
