"""Spend roll-ups per day and month, and the flag that marks a batch to be rolled up again."""

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
            name='SpendRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('period', models.CharField(choices=[('day', 'Day'), ('month', 'Month')], max_length=5)),
                ('start', models.DateField(help_text='The day, or the first day of the month.')),
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
        migrations.AddIndex(
            model_name='batch',
            index=models.Index(condition=models.Q(('cost_computed_at__isnull', True), ('running', False)), fields=['connection', '-created_at'], name='batch_cost_due'),
        ),
        migrations.AddField(
            model_name='spendrollup',
            name='connection',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='batches.connection'),
        ),
        migrations.AddIndex(
            model_name='spendrollup',
            index=models.Index(fields=['period', 'dimension', 'start'], name='spend_period_start'),
        ),
        migrations.AddIndex(
            model_name='spendrollup',
            index=models.Index(condition=models.Q(('stale', True)), fields=['start'], name='spend_stale'),
        ),
        migrations.AddConstraint(
            model_name='spendrollup',
            constraint=models.UniqueConstraint(fields=('connection', 'period', 'start', 'dimension', 'key'), name='one_spend_rollup_per_key'),
        ),
    ]
