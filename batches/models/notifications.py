"""Telling people when batches end: who watches what, what each person wants, the team
channels, and the outbox the worker delivers from."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.utils import timezone

from .. import keystore
from .batches import Batch
from .connections import Connection


class Watch(models.Model):
    """Someone who pressed Watch on a batch: told when it ends."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="watches")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "batch"], name="one_watch_each")]

    def __str__(self) -> str:
        return f"{self.user_id} watches {self.batch_id}"


class NotificationPreference(models.Model):
    """What one person wants to be told by email (the profile page)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    my_batches = models.BooleanField(
        "batches I created", default=True, help_text="Email me when a batch I created ends."
    )
    watched = models.BooleanField(
        "batches I watch", default=True, help_text="Email me when a batch I watch ends."
    )
    at_risk = models.BooleanField(
        "batches at risk of expiring",
        default=False,
        help_text="Email me when a batch I created or watch may not finish within its window.",
    )

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"

    @classmethod
    def of(cls, user: Any) -> NotificationPreference:
        """A person's preferences; the defaults when they never saved any (not stored)."""
        found = cls.objects.filter(user=user).first()
        return found or cls(user=user)


class Channel(models.Model):
    """A team channel told about every batch that ends: a Slack-compatible incoming webhook, or
    any receiver of a plain JSON body signed with HMAC-SHA256."""

    class Kind(models.TextChoices):
        SLACK = "slack", "Slack-compatible incoming webhook"
        JSON = "json", "JSON body with an HMAC signature"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.SLACK)
    # The URL of an incoming webhook is itself a secret (anyone who has it can post): it is
    # stored encrypted and shown by its host only.
    url_encrypted = models.TextField(editable=False)
    url_host = models.CharField("host", max_length=255, editable=False)
    secret_encrypted = models.TextField(blank=True, editable=False)
    connections = models.ManyToManyField(
        Connection,
        blank=True,
        related_name="+",
        help_text="Only batches of these connections. None: every connection.",
    )
    enabled = models.BooleanField(default=True)
    # Set for the channel made from BATCHWEB_NOTIFY_WEBHOOK_URL: its URL is read from there.
    from_settings = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    def set_url(self, url: str) -> None:
        self.url_encrypted = keystore.encrypt(url.strip())
        self.url_host = urlsplit(url.strip()).hostname or ""

    def url(self) -> str:
        if self.from_settings:
            return settings.BATCHWEB_NOTIFY_WEBHOOK_URL
        return keystore.decrypt(self.url_encrypted)

    def set_secret(self, secret: str) -> None:
        self.secret_encrypted = keystore.encrypt(secret.strip()) if secret.strip() else ""

    def secret(self) -> str:
        if self.from_settings:
            return settings.BATCHWEB_NOTIFY_WEBHOOK_SECRET
        return keystore.decrypt(self.secret_encrypted) if self.secret_encrypted else ""


class Outbox(models.Model):
    """One notification to one recipient, written in the same transaction as the status change
    it is about, and delivered by the worker: at most one row per (batch ending, recipient),
    claimed with a lease so that several workers never send it twice, retried with backoff,
    and kept as "dead" (shown to admins) after the last attempt."""

    class Channel(models.TextChoices):
        EMAIL = "email", "email"
        WEBHOOK = "webhook", "team channel"

    class State(models.TextChoices):
        PENDING = "pending", "waiting"
        SENT = "sent", "sent"
        DEAD = "dead", "gave up"

    key = models.CharField(max_length=255, unique=True)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # An email address, or the id of a Channel row.
    recipient = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    event = models.CharField(max_length=32)  # the ending: completed, failed, expired…
    subject = models.CharField(max_length=255)
    body = models.TextField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "notification"
        verbose_name_plural = "notifications (outbox)"
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="outbox_due")]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient}: {self.subject}"


class WebhookDelivery(models.Model):
    """One webhook OpenAI sent to batchweb, accepted or refused: a delivery whose signature was
    verified with the connection's secret (only OpenAI holds it). One row per `webhook-id`:
    a redelivery of the same id finds its row and adds none. Deliveries refused before their
    signature was verified are strangers' and are only counted (`WebhookRefusals`)."""

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    webhook_id = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64, blank=True)
    batch_openai_id = models.CharField(max_length=128, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    accepted = models.BooleanField(default=False)
    detail = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ("-received_at", "-id")
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # Decides whether an id was seen before, also between two deliveries at once.
            models.UniqueConstraint(
                fields=["connection", "webhook_id"], name="one_delivery_per_webhook_id"
            )
        ]
        # The connection's page lists its latest deliveries.
        indexes = [
            models.Index(fields=["connection", "-received_at", "-id"], name="webhook_latest")
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id} {self.event_type} {self.batch_openai_id}"


class WebhookRefusals(models.Model):
    """Deliveries to a connection's webhook URL refused before their signature was verified
    (no usable secret, a missing or wrong signature, a stale timestamp, a body too large):
    anyone can send those, so they are counted in this one row per connection, updated in
    place, and never kept one by one (issue 19: nothing durable from strangers)."""

    connection = models.OneToOneField(
        Connection, on_delete=models.CASCADE, primary_key=True, related_name="webhook_refusals"
    )
    count = models.PositiveBigIntegerField(default=0)
    last_at = models.DateTimeField(null=True, blank=True)
    # One of the service's own reasons (services/webhooks.py), never text from the request.
    last_reason = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name = "refused webhooks"
        verbose_name_plural = "refused webhooks"

    def __str__(self) -> str:
        return f"{self.count} refused"
