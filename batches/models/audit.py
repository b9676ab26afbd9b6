"""The audit trail: who did what, to which connection and batch, and how it went.

Append-only for everyone, admins included: a row is written once and never changed or deleted
through the application (the admin site shows it read-only; `save()` of an existing row,
`delete()` and the queryset's `update()`/`delete()` refuse). Deleting a batch from the cache
or a person leaves their history: the links become empty, the names written with the row stay.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from .batches import Batch
from .connections import Connection


class AuditLogIsAppendOnly(Exception):
    """Something tried to change or delete an entry of the audit trail."""


class EventQuerySet(models.QuerySet["Event"]):
    def update(self, **kwargs: Any) -> int:
        raise AuditLogIsAppendOnly("Audit entries cannot be changed.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("Audit entries cannot be deleted.")

    def visible_to(self, access: Any) -> EventQuerySet:
        """Entries about connections the person may see, and those about no connection."""
        if access.everything:
            return self
        return self.filter(
            models.Q(connection__isnull=True) | models.Q(connection_id__in=access.ids)
        )


class Event(models.Model):
    """An entry of the audit trail (the Activity page)."""

    class Action(models.TextChoices):
        CREATE = "create", "created"
        CREATE_FAILED = "create_failed", "failed to create"
        CANCEL = "cancel", "cancelled"
        CANCEL_FAILED = "cancel_failed", "failed to cancel"
        UPLOAD = "upload", "uploaded"
        UPLOAD_FAILED = "upload_failed", "failed to upload"
        RETRY = "retry", "retried failures of"
        SYNC = "sync", "synced"
        SYNC_FAILED = "sync_failed", "failed to sync"
        DOWNLOAD = "download", "downloaded"
        LABEL = "label", "labelled"
        WATCH = "watch", "watched"
        UNWATCH = "unwatch", "stopped watching"
        SIGN_IN = "sign_in", "signed in"
        SIGN_IN_FAILED = "sign_in_failed", "failed to sign in"
        SIGN_OUT = "sign_out", "signed out"
        ADMIN_ADD = "admin_add", "added (admin)"
        ADMIN_CHANGE = "admin_change", "changed (admin)"
        ADMIN_DELETE = "admin_delete", "deleted (admin)"
        WEBHOOK = "webhook", "received a webhook"
        WEBHOOK_REFUSED = "webhook_refused", "refused a webhook"
        NOTIFY_FAILED = "notify_failed", "could not deliver a notification"

    class Outcome(models.TextChoices):
        OK = "ok", "ok"
        FAILED = "failed", "failed"

    FAILED_ACTIONS = frozenset(
        {
            Action.CREATE_FAILED,
            Action.CANCEL_FAILED,
            Action.UPLOAD_FAILED,
            Action.SYNC_FAILED,
            Action.SIGN_IN_FAILED,
            Action.WEBHOOK_REFUSED,
            Action.NOTIFY_FAILED,
        }
    )

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # The name at the time, kept when the account is deleted (and for failed sign-ins, the
    # name that was tried).
    username = models.CharField(max_length=150, blank=True)
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    batch_openai_id = models.CharField(max_length=128, blank=True)
    connection = models.ForeignKey(
        Connection, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=32, choices=Action.choices)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.OK)
    # What else the action was about: "user bob", "connection azure-eu", a file name…
    target = models.CharField(max_length=255, blank=True)
    detail = models.TextField(blank=True)
    request_id = models.CharField("upstream request id", max_length=128, blank=True)

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ("-at", "-id")
        indexes = [
            models.Index(fields=["user", "-at", "-id"], name="event_by_user"),
            models.Index(fields=["action", "-at", "-id"], name="event_by_action"),
            models.Index(fields=["connection", "-at", "-id"], name="event_by_connection"),
            models.Index(fields=["batch_openai_id", "-at"], name="event_by_batch"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.username} {self.action} {self.batch_openai_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise AuditLogIsAppendOnly("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AuditLogIsAppendOnly("Audit entries cannot be deleted.")

    @property
    def failed(self) -> bool:
        return self.outcome == self.Outcome.FAILED

    @classmethod
    def record(
        cls,
        action: str,
        *,
        user: Any = None,
        username: str = "",
        batch: Batch | None = None,
        connection: Connection | None = None,
        target: str = "",
        detail: str = "",
        error: Exception | None = None,
        batch_openai_id: str = "",
    ) -> Event:
        """Write one entry. `error` (an upstream failure) marks it failed and keeps the upstream
        request id; actions whose name says they failed are failed too. `batch_openai_id` names
        a batch that is not (yet) cached, e.g. one a webhook announced."""
        signed_in = user if getattr(user, "is_authenticated", False) else None
        failed = error is not None or action in cls.FAILED_ACTIONS
        return cls.objects.create(
            action=action,
            user=signed_in,
            username=(signed_in.get_username() if signed_in else username)[:150],
            batch=batch,
            batch_openai_id=batch.openai_id if batch else batch_openai_id[:128],
            connection=batch.connection if batch else connection,
            outcome=cls.Outcome.FAILED if failed else cls.Outcome.OK,
            target=target[:255],
            detail=(detail or (str(error) if error else ""))[:2000],
            request_id=(getattr(error, "request_id", None) or "")[:128],
        )
