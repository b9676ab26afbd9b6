"""Capacity: the enqueued-token limits admins set per connection and model, and the batches
waiting for room under them (see services/capacity.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from .batches import Batch, Submission
from .connections import Connection
from .generation import GenerationQuerySet

# Larger than any provider's limit (OpenAI's highest tiers allow a few hundred billion): a
# figure above this is a typing mistake, not a limit.
MAX_ENQUEUED_TOKENS = 10**13


class CapacityLimit(models.Model):
    """How many input tokens the unfinished batches of one model may hold at once on one
    connection (OpenAI: per model and organisation; Azure: per deployment)."""

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="capacity_limits"
    )
    model = models.CharField(
        max_length=128,
        help_text="As batches name it: the model (OpenAI), or the deployment name (Azure).",
    )
    enqueued_tokens = models.BigIntegerField(
        "enqueued-token limit",
        help_text="Input tokens of unfinished batches of this model, at most. OpenAI shows yours "
        "on the organisation's Limits page; Azure's default global-batch limits are e.g. "
        "200,000,000 for gpt-4.1 and 1,000,000,000 for gpt-4.1-mini and gpt-4o-mini.",
    )
    note = models.CharField(max_length=255, blank=True, help_text="Where the figure comes from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("connection__name", "model")
        verbose_name = "capacity limit"
        constraints = [
            models.UniqueConstraint(fields=["connection", "model"], name="one_limit_per_model")
        ]

    def __str__(self) -> str:
        return f"{self.model}: {self.enqueued_tokens:,} tokens"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        self.model = (self.model or "").strip()
        if not self.model:
            errors["model"] = "Name the model (or, on Azure, the deployment)."
        value = self.enqueued_tokens
        if value is None:
            pass  # the form field says what is missing or unreadable
        elif value <= 0:
            errors["enqueued_tokens"] = (
                "A limit must be more than zero tokens. To stop warning about this model, "
                "delete the limit instead."
            )
        elif value > MAX_ENQUEUED_TOKENS:
            errors["enqueued_tokens"] = (
                f"{value:,} tokens is more than any provider allows: check the figure."
            )
        if errors:
            raise ValidationError(errors)


class CapacityWait(models.Model):
    """A batch to be submitted again by the worker once the estimate says there is room: after
    a batch failed with `token_limit_exceeded`, or a create was refused with it (Azure).

    What is submitted is `submission`, through the same path as the create form (its token
    keeps it to one batch); `batch` is the batch that failed, if there was one."""

    class State(models.TextChoices):
        WAITING = "waiting", "waiting for room"
        SUBMITTING = "submitting", "being submitted"
        SUBMITTED = "submitted", "submitted"
        CANCELLED = "cancelled", "cancelled"
        GAVE_UP = "gave_up", "gave up"

    ACTIVE = (State.WAITING, State.SUBMITTING)

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=128, blank=True)
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="capacity_waits"
    )
    submission = models.ForeignKey(
        Submission, on_delete=models.CASCADE, related_name="capacity_waits"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # None: the input's size is not known (a batch made outside batchweb).
    tokens_needed = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING)
    # Why it ended (gave up, cancelled by whom), or the last upstream problem while waiting.
    reason = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # What the worker's last look found free (None: no limit set, or not looked yet).
    room = models.BigIntegerField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    # After upstream refused it: not tried again before this.
    not_before = models.DateTimeField(null=True, blank=True)
    new_batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = GenerationQuerySet.as_manager()

    class Meta:
        ordering = ("created_at", "id")
        indexes = [
            models.Index(fields=["connection", "state", "created_at"], name="capacity_wait_due")
        ]

    def __str__(self) -> str:
        return f"{self.model or 'batch'} ({self.get_state_display()})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE

    def may_cancel(self, user: Any) -> bool:
        """Its owner, or an operator (who may cancel anyone's batch)."""
        if not self.is_active or not getattr(user, "is_authenticated", False):
            return False
        return user.has_perm("batches.cancel_any_batch") or (
            self.user_id is not None and self.user_id == user.pk
        )
