"""Where upstream calls and the database meet. Views and commands call these, nothing else.

Every function takes keyword arguments and an optional `client`, so tests can hand in one that
talks to a fake server. One module per part of the product; this package re-exports the names
views and commands use.
"""

from .batches import (
    InputFacts,
    ServiceError,
    UpsertResult,
    batch_cancel,
    batch_create,
    batch_label,
    batch_refresh,
    batch_upsert,
    new_submission_token,
)
from .connections import (
    ConnectionNotReady,
    ConnectionTestResult,
    connection_test,
    get_client,
)
from .estimates import Eta, batch_eta, etas_attach
from .notifications import (
    DeliveryResult,
    notification_preferences_save,
    notifications_at_risk,
    notifications_deliver,
    notifications_enqueue,
    watch_set,
)
from .sync import (
    PassResult,
    SyncResult,
    batch_refresh_soon,
    batches_sync,
    record_upstream_failure,
    refresh_running_batches,
    sync_pass,
)

__all__ = [
    "ConnectionNotReady",
    "ConnectionTestResult",
    "DeliveryResult",
    "Eta",
    "InputFacts",
    "PassResult",
    "ServiceError",
    "SyncResult",
    "UpsertResult",
    "batch_cancel",
    "batch_create",
    "batch_eta",
    "batch_label",
    "batch_refresh",
    "batch_refresh_soon",
    "batch_upsert",
    "batches_sync",
    "connection_test",
    "etas_attach",
    "get_client",
    "new_submission_token",
    "notification_preferences_save",
    "notifications_at_risk",
    "notifications_deliver",
    "notifications_enqueue",
    "record_upstream_failure",
    "refresh_running_batches",
    "sync_pass",
    "watch_set",
]
