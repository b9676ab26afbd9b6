"""What a person chose to hear about: the batches they watch, and the switches on their
profile page (their own batches, watched batches, batches at risk). The outbox reads both."""

from __future__ import annotations

from typing import Any

from ...models import Batch, Event, NotificationPreference, Watch


def watch_set(*, user: Any, batch: Batch, watch: bool | None = None) -> bool:
    """Start or stop watching a batch (`watch=None` toggles). Returns whether the person watches
    it now; a change is recorded in the audit trail, a repeated press is not."""
    mine = Watch.objects.filter(user=user, batch=batch)
    if watch is None:
        watch = not mine.exists()
    if watch:
        _, created = Watch.objects.get_or_create(user=user, batch=batch)
        if created:
            Event.record(Event.Action.WATCH, user=user, batch=batch)
        return True
    deleted, _ = mine.delete()
    if deleted:
        Event.record(Event.Action.UNWATCH, user=user, batch=batch)
    return False


def notification_preferences_save(
    *, user: Any, my_batches: bool, watched: bool, at_risk: bool
) -> NotificationPreference:
    """The three switches a person chose on their profile page. The address is not one of
    them: it changes once verified (services/addresses.py, `email_change_request`)."""
    preference, _ = NotificationPreference.objects.update_or_create(
        user=user, defaults={"my_batches": my_batches, "watched": watched, "at_risk": at_risk}
    )
    return preference
