"""Telling people when a batch ends, one module per step:

- `messages.py`: what a message says (the subject, the email's text, the Slack-compatible and
  JSON webhook bodies), for a batch that ended and for one at risk of missing its deadline.
- `outbox.py`: who is told, and the `Outbox` rows that hold what they are told:
  `notifications_enqueue()` inside the transaction that stores an ending, so a notification is
  written exactly when the status changes; `notifications_at_risk()` from the housekeeping.
- `delivery.py`: `notifications_deliver()`, from the worker every few seconds: claims due rows
  with a lease, sends them (SMTP, webhooks to team channels) outside any transaction, and
  retries with a doubling wait until it gives up, so a notification is never lost.
- `preferences.py`: what a person chose to hear about (watches, the profile's switches).

Senders are plain functions with keyword arguments, so moving them to Django's task framework
is a small step. This package re-exports the names views, services and commands use; a test
that replaces a helper replaces it in the module that defines it.
"""

from .delivery import (
    DeliveryResult,
    notifications_deliver,
    outbox_claim_due,
    webhook_signature,
)
from .messages import (
    at_risk_subject,
    batch_cost_text,
    email_text,
    json_event,
    message_subject,
    slack_payload,
)
from .outbox import (
    SETTINGS_CHANNEL_NAME,
    notifications_at_risk,
    notifications_enqueue,
    settings_channel,
)
from .preferences import notification_preferences_save, watch_set

__all__ = [
    "SETTINGS_CHANNEL_NAME",
    "DeliveryResult",
    "at_risk_subject",
    "batch_cost_text",
    "email_text",
    "json_event",
    "message_subject",
    "notification_preferences_save",
    "notifications_at_risk",
    "notifications_deliver",
    "notifications_enqueue",
    "outbox_claim_due",
    "settings_channel",
    "slack_payload",
    "watch_set",
    "webhook_signature",
]
