# Issue 19 (identity): company sign-ins are linked by the provider's subject (CompanyIdentity),
# and where an account's address came from is recorded (AccountEmail).
#
# No row is written for the accounts that exist already: an account without an AccountEmail row
# has an unverified address. Those addresses keep receiving notifications (a team's emails do
# not stop on upgrade), but they no longer link a company sign-in to the account: nothing says
# who typed them, and one typed on the profile page is exactly the attack this closes. An admin
# vouches for an address in the admin site (People: change the address, or the action "Vouch
# for the email addresses"), its owner by asking for a link on the profile page, and a company
# sign-in whose provider verifies the same address records it as the provider's.

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('batches', '0014_cache_generation'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AccountEmail',
            fields=[
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='account_email', serialize=False, to=settings.AUTH_USER_MODEL)),
                ('address', models.EmailField(blank=True, max_length=254)),
                ('source', models.CharField(choices=[('admin', 'set by an admin'), ('provider', 'given by the company provider'), ('verified', 'verified with a mailed link'), ('unverified', 'not verified')], default='unverified', max_length=16)),
                ('changed_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('pending', models.EmailField(blank=True, max_length=254)),
                ('pending_since', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'verbose_name': 'account email address',
            },
        ),
        migrations.AlterField(
            model_name='event',
            name='action',
            field=models.CharField(choices=[('create', 'created'), ('create_failed', 'failed to create'), ('cancel', 'cancelled'), ('cancel_failed', 'failed to cancel'), ('upload', 'uploaded'), ('upload_failed', 'failed to upload'), ('retry', 'retried failures of'), ('sync', 'synced'), ('sync_failed', 'failed to sync'), ('download', 'downloaded'), ('label', 'labelled'), ('watch', 'watched'), ('unwatch', 'stopped watching'), ('sign_in', 'signed in'), ('sign_in_failed', 'failed to sign in'), ('sign_out', 'signed out'), ('admin_add', 'added (admin)'), ('admin_change', 'changed (admin)'), ('admin_delete', 'deleted (admin)'), ('webhook', 'received a webhook'), ('webhook_refused', 'refused a webhook'), ('notify_failed', 'could not deliver a notification'), ('token_create', 'created an API token'), ('token_revoke', 'revoked an API token'), ('api_refused', 'was refused by the API'), ('capacity_wait', 'queued to resubmit when there is room'), ('capacity_submit', 'resubmitted once there was room'), ('capacity_cancel', 'stopped waiting for room to resubmit'), ('capacity_gave_up', 'gave up waiting for room to resubmit'), ('email_change', 'asked to change their email address'), ('email_verify', 'verified their email address')], max_length=32),
        ),
        migrations.CreateModel(
            name='CompanyIdentity',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('issuer', models.CharField(max_length=255)),
                ('subject', models.CharField(max_length=255)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='company_identities', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'company identity',
                'verbose_name_plural': 'company identities',
                'constraints': [models.UniqueConstraint(fields=('issuer', 'subject'), name='company_identity_once')],
            },
        ),
    ]
