"""Daily spend roll-ups, and the flag that marks a batch to be rolled up again."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0010_costs'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='SpendDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('dimension', models.CharField(choices=[('total', 'Total'), ('model', 'Model'), ('person', 'Person'), ('label', 'Label')], max_length=8)),
                ('key', models.CharField(blank=True, max_length=512)),
                ('batches', models.PositiveIntegerField(default=0)),
                ('priced', models.PositiveIntegerField(default=0)),
                ('unpriced', models.PositiveIntegerField(default=0)),
                ('cost_usd', models.DecimalField(decimal_places=6, default=0, max_digits=18)),
                ('list_cost_usd', models.DecimalField(decimal_places=6, default=0, max_digits=18)),
                ('listed_cost_usd', models.DecimalField(decimal_places=6, default=0, max_digits=18)),
                ('input_tokens', models.BigIntegerField(default=0)),
                ('cached_tokens', models.BigIntegerField(default=0)),
                ('output_tokens', models.BigIntegerField(default=0)),
                ('stale', models.BooleanField(default=False)),
            ],
        ),
        migrations.AddField(
            model_name='batch',
            name='spend_rolled',
            field=models.BooleanField(default=False),
        ),
        migrations.AddIndex(
            model_name='batch',
            index=models.Index(condition=models.Q(('spend_rolled', False)), fields=['created_at'], name='batch_spend_due'),
        ),
        migrations.AddField(
            model_name='spendday',
            name='connection',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='batches.connection'),
        ),
        migrations.AddIndex(
            model_name='spendday',
            index=models.Index(fields=['dimension', 'day'], name='spend_dimension_day'),
        ),
        migrations.AddIndex(
            model_name='spendday',
            index=models.Index(condition=models.Q(('stale', True)), fields=['day'], name='spend_stale_days'),
        ),
        migrations.AddConstraint(
            model_name='spendday',
            constraint=models.UniqueConstraint(fields=('connection', 'day', 'dimension', 'key'), name='one_spend_row_per_key'),
        ),
    ]
