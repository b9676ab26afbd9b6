"""Connections (1/3): the table, and a nullable connection on everything that will need one.

0004 fills them with the default connection, 0005 makes them required; three steps, because
PostgreSQL refuses to alter a table in the transaction that just updated its rows.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("batches", "0002_team_groups"),
    ]

    operations = [
        migrations.CreateModel(
            name="Connection",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100, unique=True)),
                ("slug", models.SlugField(help_text="Short name used in URLs and commands.", unique=True)),
                ("from_settings", models.BooleanField(default=False, help_text="Base URL, key, organisation and project come from OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_ORG_ID and OPENAI_PROJECT_ID (the installation's first connection). The fields below are then ignored.", verbose_name="configured by the environment")),
                ("base_url", models.CharField(blank=True, help_text="OpenAI: https://api.openai.com/v1 · Azure v1: https://RESOURCE.openai.azure.com/openai/v1 · Azure dated API: https://RESOURCE.openai.azure.com", max_length=500, verbose_name="base URL")),
                ("dialect", models.CharField(choices=[("openai", "OpenAI (or a compatible server)"), ("azure", "Azure OpenAI, v1 API (/openai/v1)"), ("azure-legacy", "Azure OpenAI, dated API (?api-version=)")], default="openai", max_length=16)),
                ("auth_style", models.CharField(choices=[("bearer", "Authorization: Bearer <key>"), ("api-key", "api-key: <key> (Azure)")], default="bearer", max_length=16, verbose_name="send the key as")),
                ("api_version", models.CharField(blank=True, default="2024-10-21", help_text="Only for Azure's dated API.", max_length=40, verbose_name="API version")),
                ("organization", models.CharField(blank=True, help_text="Sent as OpenAI-Organization.", max_length=100)),
                ("project", models.CharField(blank=True, help_text="Sent as OpenAI-Project.", max_length=100)),
                ("key_env", models.CharField(blank=True, help_text="The name of an environment variable that holds the key, e.g. OPENAI_KEY_RESEARCH. Leave empty to store the key (encrypted) instead.", max_length=100, verbose_name="key from environment variable")),
                ("key_encrypted", models.TextField(blank=True, editable=False)),
                ("key_last4", models.CharField(blank=True, editable=False, max_length=4)),
                ("max_requests_per_file", models.PositiveIntegerField(blank=True, help_text="Empty: the provider's limit (50,000 on OpenAI, 100,000 on Azure).", null=True)),
                ("max_file_bytes", models.BigIntegerField(blank=True, help_text="Empty: 200 MB (209,715,200 bytes).", null=True)),
                ("allowed_endpoints", models.JSONField(blank=True, default=list, help_text='A list such as ["/v1/chat/completions"]; empty: all.')),
                ("output_expiry_min_hours", models.PositiveIntegerField(blank=True, help_text="Empty: 1 hour on OpenAI, 14 days on Azure.", null=True)),
                ("output_expiry_max_hours", models.PositiveIntegerField(blank=True, help_text="Empty: 30 days.", null=True)),
                ("deployments", models.JSONField(blank=True, default=dict, help_text='Azure: deployment name → model, e.g. {"gpt4o-batch": "gpt-4o"}. When set, input files may only name these deployments.')),
                ("enabled", models.BooleanField(default=True, help_text="A disabled connection is not synced and takes no new batches.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("groups", models.ManyToManyField(blank=True, help_text="Only members of these groups see and use this connection. None: everyone.", related_name="connections", to="auth.group")),
            ],
            options={"ordering": ("name",)},
        ),
        # Nullable first, filled with the default connection, then required.
        migrations.AddField(
            model_name="batch",
            name="connection",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="batches", to="batches.connection"),
        ),
        migrations.AddField(
            model_name="event",
            name="connection",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="batches.connection"),
        ),
        migrations.AddField(
            model_name="submission",
            name="connection",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="batches.connection"),
        ),
        migrations.AddField(
            model_name="syncstate",
            name="connection",
            field=models.OneToOneField(null=True, on_delete=django.db.models.deletion.CASCADE, related_name="sync_state", to="batches.connection"),
        ),
        migrations.AddField(
            model_name="batchtally",
            name="connection_id",
            field=models.BigIntegerField(default=0),
        ),
    ]
