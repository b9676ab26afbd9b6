"""Personal API tokens, the files uploaded through the API, and the record that makes a create
run at most once per Idempotency-Key (or per identical request, for the SDK's own retries)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.utils import timezone

from batches.models import Batch, Connection

TOKEN_PREFIX = "bw_"  # noqa: S105 - the visible start of every token, not a secret


class Scope(models.TextChoices):
    READ = "read", "Read: list and read batches and files"
    SUBMIT = "submit", "Submit: also upload files, create and cancel batches"


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self, *, now: dt.datetime | None = None) -> ApiTokenQuerySet:
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True, expires_at__gt=now)


class ApiToken(models.Model):
    """A personal token for scripts. Only `prefix` (to find the row) and the SHA-256 of the
    secret part are stored: the token itself is shown once, when it is made."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_sha256 = models.CharField(max_length=64)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self) -> str:
        """What identifies the token in lists and the audit trail: never enough to use it."""
        return f"{TOKEN_PREFIX}{self.prefix}…"

    def state(self, *, now: dt.datetime | None = None) -> str:
        """ "active", "expired" or "revoked"."""
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= (now or timezone.now()):
            return "expired"
        return "active"

    @property
    def is_active(self) -> bool:
        return self.state() == "active"

    @property
    def may_submit(self) -> bool:
        return self.scope == Scope.SUBMIT


class ApiFile(models.Model):
    """A file uploaded through the API, with what its check found: a batch created from it later
    keeps its name, size, line count and model, as one created through the form does."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    file_id = models.CharField(max_length=128)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    filename = models.CharField(max_length=255)
    bytes = models.BigIntegerField(default=0)
    lines = models.PositiveIntegerField(default=0)
    endpoint = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "file_id"], name="api_file_once"),
        ]

    def __str__(self) -> str:
        return f"{self.filename} ({self.file_id})"


class CreateRequest(models.Model):
    """One create asked for through the API, keyed by its Idempotency-Key, or, without one, by
    a hash of the request (the official SDK sends no key, and its retries repeat the body).
    The state moves pending → done, or failed (which a retry may take over)."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    # "key:<Idempotency-Key>" or "body:<sha256 of the request>".
    key = models.CharField(max_length=300)
    fingerprint = models.CharField(max_length=64)
    # batch_create's duplicate guard: stamped into the batch's metadata.
    submission_token = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "connection", "key"], name="api_create_once_per_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key[:40]} ({self.state})"


# The request header that picks a connection by its slug.
CONNECTION_HEADER = "X-Batchweb-Connection"
