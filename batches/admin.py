from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html

from . import keystore
from .models import Batch, BatchTally, Connection, Event, SyncState
from .services.connections import connection_test
from .templatetags.batchweb import reltime


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("openai_id", "status", "endpoint", "model", "created_by", "created_at")
    list_filter = ("status", "endpoint")
    search_fields = ("openai_id", "input_file_id", "output_file_id", "search_text")
    raw_id_fields = ("created_by", "retry_of")
    readonly_fields = ("raw", "synced_at")
    list_select_related = ("created_by",)

    # Deleting here bypasses the services that keep the list's counts: recount afterwards.
    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        BatchTally.rebuild()

    def delete_queryset(self, request, queryset) -> None:
        super().delete_queryset(request, queryset)
        BatchTally.rebuild()


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("at", "user", "action", "batch_openai_id", "detail")
    list_filter = ("action",)
    search_fields = ("batch_openai_id", "detail", "user__username")
    list_select_related = ("user",)


# --- Connections ----------------------------------------------------------------------------

KEY_HELP = (
    "Stored encrypted; leave empty to keep the current key. "
    "Only its last 4 characters are shown again."
)


class ConnectionForm(forms.ModelForm):
    """The model's fields plus a write-only key: it is encrypted on save and never sent back to
    the browser (the field renders empty, always)."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=KEY_HELP,
    )

    class Meta:
        model = Connection
        fields = (
            "name",
            "slug",
            "enabled",
            "groups",
            "from_settings",
            "base_url",
            "dialect",
            "auth_style",
            "api_version",
            "organization",
            "project",
            "key_env",
            "max_requests_per_file",
            "max_file_bytes",
            "allowed_endpoints",
            "output_expiry_min_hours",
            "output_expiry_max_hours",
            "deployments",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        key = cleaned.get("api_key") or ""
        from_settings = cleaned.get("from_settings", self.instance.from_settings)
        key_env = cleaned.get("key_env") or ""
        if key and from_settings:
            self.add_error(
                "api_key",
                "This connection takes its key from OPENAI_API_KEY; untick “configured by the "
                "environment” to store a key of its own.",
            )
        elif key and key_env:
            self.add_error(
                "api_key",
                "Give either an API key to store or the name of an environment variable, not both.",
            )
        elif key:
            try:
                self.instance.set_key(key)
            except keystore.KeystoreError as error:
                self.add_error("api_key", str(error))
        elif not from_settings and not key_env and not self.instance.key_encrypted:
            self.add_error(
                "api_key",
                "Give the API key, or the name of an environment variable that holds it.",
            )
        return cleaned

    def save(self, commit: bool = True) -> Connection:
        connection = super().save(commit=False)
        if connection.key_env or connection.from_settings:
            # The key now comes from elsewhere: keep no stale copy of an old one.
            connection.key_encrypted = ""
            connection.key_last4 = ""
        if commit:
            connection.save()
            self.save_m2m()
        return connection


def _sync_state(connection: Connection) -> SyncState | None:
    # A reverse one-to-one without a row raises RelatedObjectDoesNotExist, an AttributeError.
    return getattr(connection, "sync_state", None)


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = (
        "name",
        "slug",
        "dialect_display",
        "base_url_display",
        "key_source_display",
        "enabled",
        "groups_display",
        "last_sync_display",
        "last_error_display",
    )
    list_filter = ("enabled", "dialect")
    search_fields = ("name", "slug", "base_url")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("groups",)
    readonly_fields = ("key_source_display", "last_sync_display", "last_error_display")
    actions = ["test_connections", "delete_selected"]
    fieldsets = (
        (None, {"fields": ("name", "slug", "enabled", "groups")}),
        (
            "Where and how",
            {
                "fields": (
                    "from_settings",
                    "base_url",
                    "dialect",
                    "auth_style",
                    "api_version",
                    "organization",
                    "project",
                )
            },
        ),
        ("Key", {"fields": ("key_source_display", "api_key", "key_env")}),
        (
            "Limits",
            {
                "classes": ("collapse",),
                "fields": (
                    "max_requests_per_file",
                    "max_file_bytes",
                    "allowed_endpoints",
                    "output_expiry_min_hours",
                    "output_expiry_max_hours",
                    "deployments",
                ),
            },
        ),
        ("Sync", {"fields": ("last_sync_display", "last_error_display")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Connection]:
        return super().get_queryset(request).select_related("sync_state").prefetch_related("groups")

    # --- Columns ------------------------------------------------------------------------------

    @admin.display(description="dialect", ordering="dialect")
    def dialect_display(self, obj: Connection) -> str:
        return obj.dialect  # the short name; the long label crowds the list

    @admin.display(description="base URL")
    def base_url_display(self, obj: Connection) -> str:
        return "from environment (OPENAI_BASE_URL)" if obj.from_settings else obj.base_url

    @admin.display(description="key")
    def key_source_display(self, obj: Connection) -> str:
        return obj.key_source() if obj.pk else "—"

    @admin.display(description="restricted to")
    def groups_display(self, obj: Connection) -> str:
        return ", ".join(g.name for g in obj.groups.all()) or "everyone"

    @admin.display(description="last successful sync")
    def last_sync_display(self, obj: Connection) -> str:
        state = _sync_state(obj)
        if state is None or state.last_success_at is None:
            return "never"
        return reltime(state.last_success_at)

    @admin.display(description="last error")
    def last_error_display(self, obj: Connection) -> str:
        state = _sync_state(obj)
        if state is None or not state.is_failing:
            return "—"
        since = reltime(state.failing_since)
        request_id = (
            format_html(" (request id {})", state.last_error_request_id)
            if state.last_error_request_id and state.last_error_request_id not in state.last_error
            else ""
        )
        return format_html("failing since {}: {}{}", since, state.last_error, request_id)

    # --- Actions ------------------------------------------------------------------------------

    @admin.action(description="Test connection", permissions=["change"])
    def test_connections(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in queryset:
            result = connection_test(connection=connection)
            if result.ok:
                level = messages.SUCCESS
            elif result.is_warning:
                level = messages.WARNING
            else:
                level = messages.ERROR
            text = " ".join([f"{connection.name}: {result.message}", *result.details])
            self.message_user(request, text, level)

    @admin.action(description="Delete selected connections", permissions=["delete"])
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[Connection]
    ) -> HttpResponse | None:
        busy = list(
            queryset.filter(batches__isnull=False).distinct().values_list("name", flat=True)
        )
        if busy:
            self.message_user(request, _refusal(busy), messages.ERROR)
            return None
        return django_delete_selected(self, request, queryset)

    # --- Deleting one -------------------------------------------------------------------------

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Batch.connection is PROTECT: say so plainly instead of the list of protected objects.
        connection = self.get_object(request, unquote(object_id))
        if connection is not None and connection.batches.exists():
            self.message_user(request, _refusal([connection.name]), messages.ERROR)
            return redirect(reverse("admin:batches_connection_change", args=[connection.pk]))
        return super().delete_view(request, object_id, extra_context)


def _refusal(names: list[str]) -> str:
    listed = ", ".join(f"“{name}”" for name in names)
    has = "has" if len(names) == 1 else "have"
    return (
        f"{listed} {has} batches, so cannot be deleted: their batches would lose their "
        "connection. Disable it instead (untick “enabled”): it is then no longer synced and "
        "takes no new batches."
    )
