"""The audit trail's actions for personal API tokens and refused API requests (issue 12)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0011_spend'),
    ]

    operations = [
        migrations.AlterField(
            model_name='event',
            name='action',
            field=models.CharField(choices=[('create', 'created'), ('create_failed', 'failed to create'), ('cancel', 'cancelled'), ('cancel_failed', 'failed to cancel'), ('upload', 'uploaded'), ('upload_failed', 'failed to upload'), ('retry', 'retried failures of'), ('sync', 'synced'), ('sync_failed', 'failed to sync'), ('download', 'downloaded'), ('label', 'labelled'), ('watch', 'watched'), ('unwatch', 'stopped watching'), ('sign_in', 'signed in'), ('sign_in_failed', 'failed to sign in'), ('sign_out', 'signed out'), ('admin_add', 'added (admin)'), ('admin_change', 'changed (admin)'), ('admin_delete', 'deleted (admin)'), ('webhook', 'received a webhook'), ('webhook_refused', 'refused a webhook'), ('notify_failed', 'could not deliver a notification'), ('token_create', 'created an API token'), ('token_revoke', 'revoked an API token'), ('api_refused', 'was refused by the API')], max_length=32),
        ),
    ]
