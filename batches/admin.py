from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.db.models import CharField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from . import keystore
from .admin_audit import AuditedAdmin
from .models import (
    Batch,
    BatchTally,
    CapacityLimit,
    CapacityWait,
    Channel,
    Connection,
    Event,
    Outbox,
    PriceOverride,
    SyncState,
    WebhookDelivery,
    WebhookRefusals,
)
from .services import connections as connection_services
from .services import webhooks as webhook_services
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


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records nobody may add, change or delete here, superusers included."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    """The audit trail, read-only for everyone, superusers included."""

    list_display = (
        "at",
        "username",
        "action",
        "outcome",
        "connection",
        "batch_openai_id",
        "detail",
    )
    list_filter = ("action", "outcome", "connection")
    search_fields = ("batch_openai_id", "detail", "username", "target")
    list_select_related = ("connection",)
    date_hierarchy = "at"


# --- Connections ----------------------------------------------------------------------------

KEY_HELP = (
    "Stored encrypted; leave empty to keep the current key. "
    "Only its last 4 characters are shown again."
)


def write_only(label: str, help_text: str) -> forms.CharField:
    """A field for a secret: never rendered back to the browser, left empty to keep it."""
    return forms.CharField(
        label=label,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


class IdsField(forms.ModelMultipleChoiceField):
    """Django's choice of several rows, refusing an id past any database integer as an invalid
    choice: the stock field sends it to the database, which fails with an error (a 500)."""

    def _check_values(self, value: Any) -> Any:
        for pk in value or ():
            text = str(pk).strip()
            if text.isascii() and text.lstrip("-").isdigit() and abs(int(text)) >= 2**63:
                raise forms.ValidationError(
                    self.error_messages["invalid_pk_value"],
                    code="invalid_pk_value",
                    params={"pk": text[:40]},
                )
        return super()._check_values(value)


class ConnectionForm(forms.ModelForm):
    """The model's fields plus a write-only key: it is encrypted on save and never sent back to
    the browser (the field renders empty, always)."""

    api_key = write_only("API key", KEY_HELP)
    webhook_secret = write_only(
        "Webhook signing secret",
        "The whsec_… secret OpenAI (or Azure) shows when you register this "
        "connection's webhook URL. Stored encrypted; leave empty to keep the current one. "
        "Only its last 4 characters are shown again. For the connection configured by the "
        "environment, OPENAI_WEBHOOK_SECRET is used while none is stored.",
    )
    clear_webhook_secret = forms.BooleanField(
        label="Remove the stored webhook secret",
        required=False,
        help_text="Deliveries are then refused (or, for the connection configured by the "
        "environment, verified with OPENAI_WEBHOOK_SECRET).",
    )
    open_to_everyone = forms.BooleanField(
        label="Open to everyone",
        required=False,
        help_text="A connection that had groups stays restricted when its last group is removed "
        "or deleted: then only Admins see it. Tick this (with no groups chosen) to let every "
        "team member see and use it again.",
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
        field_classes = {"groups": IdsField}

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
        self._clean_webhook_secret(cleaned)
        if cleaned.get("open_to_everyone") and cleaned.get("groups"):
            self.add_error(
                "open_to_everyone",
                "Remove the groups to open it to everyone, or untick this to keep it for the "
                "groups' members.",
            )
        return cleaned

    def _clean_webhook_secret(self, cleaned: dict[str, Any]) -> None:
        secret = cleaned.get("webhook_secret") or ""
        if secret and cleaned.get("clear_webhook_secret"):
            self.add_error(
                "webhook_secret", "Give a new webhook secret or remove the stored one, not both."
            )
        elif secret:
            problem = webhook_services.webhook_secret_problem(secret)
            if problem:
                # The reason names the expected form, never the value.
                self.add_error("webhook_secret", f"This cannot be right: {problem}.")
                return
            try:
                self.instance.set_webhook_secret(secret)
            except keystore.KeystoreError as error:
                self.add_error("webhook_secret", str(error))
        elif cleaned.get("clear_webhook_secret"):
            self.instance.set_webhook_secret("")

    def save(self, commit: bool = True) -> Connection:
        connection = super().save(commit=False)
        if self.cleaned_data.get("open_to_everyone"):
            # The one way back from "restricted": an admin says so (adding a group sets it,
            # models/connections.py).
            connection.restricted = False
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
class ConnectionAdmin(AuditedAdmin):
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
    readonly_fields = (
        "key_source_display",
        "webhook_secret_display",
        "last_sync_display",
        "last_error_display",
        "audience_display",
    )
    actions = ["test_connections", "delete_selected"]
    fieldsets = (
        (None, {"fields": ("name", "slug", "enabled")}),
        (
            "Who can see it",
            {
                "fields": ("audience_display", "groups", "open_to_everyone"),
                "description": "With groups, only their members (and superusers) see and use "
                "this connection. A connection that had groups and lost them all fails closed: "
                "only Admins see it until you add a group or open it to everyone.",
            },
        ),
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
            "Webhooks",
            {
                "fields": ("webhook_secret_display", "webhook_secret", "clear_webhook_secret"),
                "description": "OpenAI's webhooks tell batchweb at once when a batch ends; the "
                "URL to register is on the connection's page.",
            },
        ),
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

    @admin.display(description="webhook secret")
    def webhook_secret_display(self, obj: Connection) -> str:
        return obj.webhook_secret_source() if obj.pk else "—"

    @admin.display(description="restricted to")
    def groups_display(self, obj: Connection) -> str:
        names = ", ".join(g.name for g in obj.groups.all())
        return names or ("no group: Admins only" if obj.restricted else "everyone")

    @admin.display(description="who can see it now")
    def audience_display(self, obj: Connection) -> str:
        if not obj.pk:
            return "everyone, unless you choose groups"
        names = ", ".join(g.name for g in obj.groups.all())
        if names:
            return f"members of {names}"
        if obj.restricted:
            return (
                "restricted to no group: only Admins can see it; add a group or make it open "
                "to everyone"
            )
        return "everyone"

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
            result = connection_services.connection_test(connection=connection)
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


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """What OpenAI sent, accepted or refused: a record, read-only like the audit trail."""

    list_display = (
        "received_at",
        "connection",
        "webhook_id",
        "event_type",
        "batch_openai_id",
        "accepted",
        "detail",
    )
    list_filter = ("accepted", "event_type", "connection")
    search_fields = ("webhook_id", "batch_openai_id", "detail")
    list_select_related = ("connection",)
    date_hierarchy = "received_at"


@admin.register(WebhookRefusals)
class WebhookRefusalsAdmin(ReadOnlyAdmin):
    """Deliveries refused before their signature was verified: a count per connection, since
    anyone who knows the URL can send them (services/webhooks.py)."""

    list_display = ("connection", "count", "last_at", "last_reason")
    list_select_related = ("connection",)


# --- Notifications: team channels and the outbox ---------------------------------------------

CHANNEL_URL_HELP = (
    "The incoming-webhook URL (Slack: Apps → Incoming Webhooks). Anyone who has it can post, "
    "so it is stored encrypted and only its host is shown again; leave empty to keep it."
)
CHANNEL_SIGNING_HELP = (
    "Signs the JSON body (header X-Batchweb-Signature: sha256=HMAC of the body); receivers "
    "check it with the same secret. Stored encrypted, never shown; leave empty to keep it."
)


class ChannelForm(forms.ModelForm):
    """A channel with a write-only URL and secret, encrypted on save and never sent back to the
    browser (the fields render empty, always)."""

    webhook_url = forms.URLField(
        label="Webhook URL",
        required=False,
        assume_scheme="https",
        max_length=2000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=CHANNEL_URL_HELP,
    )
    secret = write_only("Signing secret", CHANNEL_SIGNING_HELP)
    remove_secret = forms.BooleanField(
        label="Remove the signing secret", required=False, help_text="Send unsigned bodies."
    )

    class Meta:
        model = Channel
        fields = ("name", "kind", "enabled", "connections")
        field_classes = {"connections": IdsField}

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data.get("webhook_url") or ""
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise forms.ValidationError("Give an http:// or https:// URL.")
        return url

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        url, secret = cleaned.get("webhook_url") or "", cleaned.get("secret") or ""
        if self.instance.from_settings:
            if url or secret:
                self.add_error(
                    None,
                    "This channel reads its URL and secret from BATCHWEB_NOTIFY_WEBHOOK_URL and "
                    "BATCHWEB_NOTIFY_WEBHOOK_SECRET: change them there.",
                )
            return cleaned
        if not url and not self.instance.url_encrypted:
            self.add_error("webhook_url", "Give the webhook URL.")
        try:
            if url:
                self.instance.set_url(url)
            if secret:
                self.instance.set_secret(secret)
            elif cleaned.get("remove_secret"):
                self.instance.set_secret("")
        except keystore.KeystoreError as error:
            self.add_error("webhook_url" if url else "secret", str(error))
        return cleaned


@admin.register(Channel)
class ChannelAdmin(AuditedAdmin):
    form = ChannelForm
    list_display = ("name", "kind", "url_host", "connections_display", "signed", "enabled")
    list_filter = ("enabled", "kind")
    search_fields = ("name", "url_host")
    filter_horizontal = ("connections",)
    readonly_fields = ("url_host", "secret_display", "source_display")
    fieldsets = (
        (None, {"fields": ("name", "kind", "enabled", "connections")}),
        (
            "Where to",
            {
                "fields": (
                    "source_display",
                    "url_host",
                    "webhook_url",
                    "secret_display",
                    "secret",
                    "remove_secret",
                )
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Channel]:
        return super().get_queryset(request).prefetch_related("connections")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        # Its kind follows the settings: signed JSON when BATCHWEB_NOTIFY_WEBHOOK_SECRET is set.
        return (*fields, "kind") if obj is not None and obj.from_settings else fields

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.from_settings:
            where = ("source_display", "url_host", "secret_display")
            return ((None, {"fields": ("name", "kind", "enabled", "connections")}),
                    ("Where to", {"fields": where}))  # fmt: skip
        return super().get_fieldsets(request, obj)

    @admin.display(description="connections")
    def connections_display(self, obj: Channel) -> str:
        return ", ".join(c.name for c in obj.connections.all()) or "every connection"

    @admin.display(description="signed", boolean=True)
    def signed(self, obj: Channel) -> bool:
        return bool(obj.secret_encrypted) or (
            obj.from_settings and bool(settings.BATCHWEB_NOTIFY_WEBHOOK_SECRET)
        )

    @admin.display(description="signing secret")
    def secret_display(self, obj: Channel) -> str:
        return "set" if self.signed(obj) else "none"

    @admin.display(description="URL from")
    def source_display(self, obj: Channel) -> str:
        if obj.from_settings:
            return "the environment (BATCHWEB_NOTIFY_WEBHOOK_URL, BATCHWEB_NOTIFY_WEBHOOK_SECRET)"
        return "this form (stored encrypted)"


class OutboxChannelFilter(admin.SimpleListFilter):
    """Notifications of one team channel (their recipient is the channel's id)."""

    title = "team channel"
    parameter_name = "team_channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(pk), name) for pk, name in Channel.objects.values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Outbox]) -> QuerySet[Outbox]:
        if self.value():
            return queryset.filter(channel=Outbox.Channel.WEBHOOK, recipient=self.value())
        return queryset


@admin.register(Outbox)
class OutboxAdmin(ReadOnlyAdmin):
    """Read-only: what was sent, what waits, and what was given up ("dead"), with "Try again"."""

    list_display = (
        "created_at",
        "channel",
        "recipient_display",
        "batch",
        "subject",
        "state",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "last_error",
    )
    list_filter = ("state", "channel", OutboxChannelFilter)
    search_fields = ("subject", "recipient", "key")
    list_select_related = ("batch",)
    date_hierarchy = "created_at"
    actions = ["try_again"]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("batches.change_outbox")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Outbox]:
        # The name of a webhook's channel (its recipient is the channel's id, as text).
        names = Channel.objects.annotate(key=Cast("pk", CharField())).filter(
            key=OuterRef("recipient")
        )
        return (
            super().get_queryset(request).annotate(channel_name=Subquery(names.values("name")[:1]))
        )

    @admin.display(description="to")
    def recipient_display(self, obj: Outbox) -> str:
        if obj.channel == Outbox.Channel.EMAIL:
            return obj.recipient
        name = getattr(obj, "channel_name", None)
        return f"{name} (team channel)" if name else "a deleted channel"

    @admin.action(description="Try again", permissions=["retry"])
    def try_again(self, request: HttpRequest, queryset: QuerySet[Outbox]) -> None:
        """Send the selected waiting or dead notifications at the worker's next round, with
        their attempts counted afresh. One a worker is sending now is left alone."""
        now = timezone.now()
        free = Q(lease_until__isnull=True) | Q(lease_until__lte=now)
        chosen = queryset.filter(state__in=[Outbox.State.DEAD, Outbox.State.PENDING]).filter(free)
        count = Outbox.objects.filter(pk__in=list(chosen.values_list("pk", flat=True))).update(
            state=Outbox.State.PENDING, next_attempt_at=now, lease_until=None, attempts=0
        )
        if count:
            Event.record(
                Event.Action.ADMIN_CHANGE,
                user=request.user,
                target="notifications",
                detail=f"Try again: {count} notification{'s' if count != 1 else ''}",
            )
        self.message_user(
            request,
            f"{count} notification{'s' if count != 1 else ''} will be sent at the worker's next "
            "round (within seconds while it runs).",
            messages.SUCCESS,
        )


@admin.register(PriceOverride)
class PriceOverrideAdmin(AuditedAdmin):
    """Batch prices an admin sets per model; they win over the `genai-prices` package. After a
    change, `manage.py costs_recompute` updates the stored costs of finished batches."""

    list_display = (
        "model",
        "input_per_mtok",
        "cached_input_per_mtok",
        "output_per_mtok",
        "note",
        "updated_at",
    )
    search_fields = ("model", "note")
    readonly_fields = ("updated_at",)
    fields = (
        "model",
        "input_per_mtok",
        "cached_input_per_mtok",
        "output_per_mtok",
        "note",
        "updated_at",
    )


class CapacityLimitForm(forms.ModelForm):
    """The limit as people write it ("200,000,000", "1_000_000_000"), with a clear message
    for a figure that is not a whole number."""

    enqueued_tokens = forms.CharField(
        label="Enqueued-token limit",
        help_text=CapacityLimit._meta.get_field("enqueued_tokens").help_text,
    )

    class Meta:
        model = CapacityLimit
        fields = ("connection", "model", "enqueued_tokens", "note")

    def clean_enqueued_tokens(self) -> int:
        text = str(self.cleaned_data["enqueued_tokens"]).strip()
        digits = text.replace(",", "").replace("_", "").replace(" ", "")
        sign, number = (digits[:1], digits[1:]) if digits[:1] in "+-" else ("", digits)
        if not number.isascii() or not number.isdigit():
            raise forms.ValidationError(
                f"“{text[:40]}” is not a number of tokens: enter a whole number such as "
                "200000000 or 200,000,000."
            )
        return -int(number) if sign == "-" else int(number)


@admin.register(CapacityLimit)
class CapacityLimitAdmin(AuditedAdmin):
    """Enqueued-token limits per connection and model; the create form warns before a batch
    that would pass one, and the worker waits for room under them (services/capacity.py)."""

    form = CapacityLimitForm
    list_display = ("connection", "model", "limit", "queued_now", "note", "updated_at")
    list_filter = ("connection",)
    search_fields = ("model", "note")
    list_select_related = ("connection",)
    change_list_template = "batches/capacity/admin_change_list.html"
    change_form_template = "batches/capacity/admin_change_form.html"

    @admin.display(description="limit", ordering="enqueued_tokens")
    def limit(self, obj: CapacityLimit) -> str:
        return f"{obj.enqueued_tokens:,}"

    @admin.display(description="queued now (estimate)")
    def queued_now(self, obj: CapacityLimit) -> str:
        from .services import capacity

        return capacity.capacity_for(connection=obj.connection, model=obj.model).enqueued_text()

    def _hints(self, extra_context: dict[str, Any] | None) -> dict[str, Any]:
        from .services import capacity

        return {**(extra_context or {}), "capacity_defaults": capacity.PUBLISHED_DEFAULTS}

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return super().changelist_view(request, self._hints(extra_context))

    def changeform_view(
        self, request: HttpRequest, object_id: Any = None, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        return super().changeform_view(request, object_id, form_url, self._hints(extra_context))


@admin.register(CapacityWait)
class CapacityWaitAdmin(ReadOnlyAdmin):
    """Batches waiting for room, and how each wait ended; people stop a wait on the batch's
    page, the confirm page or the connection's page, so this list is read-only."""

    list_display = ("created_at", "connection", "model", "tokens_needed", "state", "user", "reason")
    list_filter = ("state", "connection")
    list_select_related = ("connection", "user")
    search_fields = ("model", "reason", "batch__openai_id", "new_batch__openai_id")
