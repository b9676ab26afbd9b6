"""The audit trail: who did what, to which connection and batch, and how it went.

Append-only for everyone, admins included: a row is written once and never changed or deleted
through the application (the admin site shows it read-only; `save()` of an existing row,
`delete()` and the queryset's `update()`/`delete()` refuse). Deleting a batch from the cache
or a person leaves their history: the links become empty, the names written with the row stay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from .batches import Batch
from .connections import Connection

logger = logging.getLogger(__name__)

# While a request made with a personal API token is served, what made it ("API token “ci”"):
# entries written meanwhile say so, so the trail tells a script's actions from a person's.
_VIA: ContextVar[str] = ContextVar("audit_via", default="")


@contextmanager
def audit_via(what: str) -> Iterator[None]:
    """Entries recorded inside this block end with "(via WHAT)"."""
    reset = _VIA.set(what)
    try:
        yield
    finally:
        _VIA.reset(reset)


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
        TOKEN_CREATE = "token_create", "created an API token"
        TOKEN_REVOKE = "token_revoke", "revoked an API token"
        API_REFUSED = "api_refused", "was refused by the API"
        CAPACITY_WAIT = "capacity_wait", "queued to resubmit when there is room"
        CAPACITY_SUBMIT = "capacity_submit", "resubmitted once there was room"
        CAPACITY_CANCEL = "capacity_cancel", "stopped waiting for room to resubmit"
        CAPACITY_GAVE_UP = "capacity_gave_up", "gave up waiting for room to resubmit"
        EMAIL_CHANGE = "email_change", "asked to change their email address"
        EMAIL_VERIFY = "email_verify", "verified their email address"

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
            Action.API_REFUSED,
            Action.CAPACITY_GAVE_UP,
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
        detail = detail or (str(error) if error else "")
        if via := _VIA.get():
            detail = f"{detail} (via {via})" if detail else f"via {via}"
        event = cls.objects.create(
            action=action,
            user=signed_in,
            username=(signed_in.get_username() if signed_in else username)[:150],
            batch=batch,
            batch_openai_id=batch.openai_id if batch else batch_openai_id[:128],
            connection=batch.connection if batch else connection,
            outcome=cls.Outcome.FAILED if failed else cls.Outcome.OK,
            target=target[:255],
            detail=detail[:2000],
            request_id=(getattr(error, "request_id", None) or "")[:128],
        )
        # One log line per entry, carrying the id of the request that made it (the log's
        # request_id): from an entry to everything logged while serving that request.
        logger.info(
            "audit entry %s: %s %s %s%s",
            event.pk,
            # The name of a signed-in person only: a failed sign-in's name may be a mistyped
            # password, kept in the trail but not sent to the logs.
            event.username if signed_in else "-",
            event.action,
            event.outcome,
            f" batch {event.batch_openai_id}" if event.batch_openai_id else "",
        )
        return event
