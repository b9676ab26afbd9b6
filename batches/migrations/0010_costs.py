"""Prices set by admins, and the stored cost of each batch."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("batches", "0009_progress_snapshots")]

    operations = [
        migrations.CreateModel(
            name='PriceOverride',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model', models.CharField(help_text='The model name as batches report it (for Azure: the model, not the deployment).', max_length=128, unique=True)),
                ('input_per_mtok', models.DecimalField(decimal_places=6, max_digits=12, verbose_name='input, $ per million tokens')),
                ('cached_input_per_mtok', models.DecimalField(blank=True, decimal_places=6, help_text='Empty: cached input costs the same as input.', max_digits=12, null=True, verbose_name='cached input, $ per million tokens')),
                ('output_per_mtok', models.DecimalField(decimal_places=6, max_digits=12, verbose_name='output, $ per million tokens')),
                ('note', models.CharField(blank=True, help_text='Where the price comes from.', max_length=255)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'verbose_name': 'price override',
                'ordering': ('model',),
            },
        ),
        migrations.AddField(
            model_name='batch',
            name='cost_computed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='batch',
            name='cost_note',
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.AddField(
            model_name='batch',
            name='cost_source',
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name='batch',
            name='cost_usd',
            field=models.DecimalField(blank=True, decimal_places=6, max_digits=14, null=True),
        ),
        migrations.AddField(
            model_name='batch',
            name='list_cost_usd',
            field=models.DecimalField(blank=True, decimal_places=6, max_digits=14, null=True),
        ),
    ]
