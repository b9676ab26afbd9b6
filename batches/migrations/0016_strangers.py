# Issue 19 (nothing durable from strangers): deliveries refused before their signature was
# verified are counted per connection (WebhookRefusals), not kept one row each; the rows kept
# so far are folded into those counts. What is left are deliveries OpenAI signed, one row per
# webhook-id (a redelivery finds its row).

import django.db.models.deletion
from django.db import migrations, models


def fold_refused_deliveries(apps, schema_editor):
    """Every refused row becomes part of its connection's count (its latest time and reason
    kept), then goes: among them a stranger's, and a refused row may share its webhook-id
    with the accepted one, which the new constraint forbids."""
    Delivery = apps.get_model("batches", "WebhookDelivery")
    Refusals = apps.get_model("batches", "WebhookRefusals")
    refused = Delivery.objects.filter(accepted=False)
    connection_ids = refused.order_by().values_list("connection_id", flat=True).distinct()
    for connection_id in connection_ids:
        mine = refused.filter(connection_id=connection_id)
        last = mine.order_by("-received_at", "-id").first()
        Refusals.objects.create(
            connection_id=connection_id,
            count=mine.count(),
            last_at=last.received_at,
            last_reason=last.detail,
        )
    refused.delete()


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0015_identity'),
    ]

    operations = [
        migrations.CreateModel(
            name='WebhookRefusals',
            fields=[
                ('connection', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='webhook_refusals', serialize=False, to='batches.connection')),
                ('count', models.PositiveBigIntegerField(default=0)),
                ('last_at', models.DateTimeField(blank=True, null=True)),
                ('last_reason', models.CharField(blank=True, max_length=255)),
            ],
            options={
                'verbose_name': 'refused webhooks',
                'verbose_name_plural': 'refused webhooks',
            },
        ),
        migrations.RunPython(fold_refused_deliveries, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name='webhookdelivery',
            name='one_accepted_delivery',
        ),
        migrations.AddConstraint(
            model_name='webhookdelivery',
            constraint=models.UniqueConstraint(fields=('connection', 'webhook_id'), name='one_delivery_per_webhook_id'),
        ),
    ]
