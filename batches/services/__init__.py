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
    batch_refresh,
    batch_upsert,
    get_client,
    new_submission_token,
)
from .sync import PassResult, SyncResult, batches_sync, refresh_running_batches, sync_pass

__all__ = [
    "InputFacts",
    "PassResult",
    "ServiceError",
    "SyncResult",
    "UpsertResult",
    "batch_cancel",
    "batch_create",
    "batch_refresh",
    "batch_upsert",
    "batches_sync",
    "get_client",
    "new_submission_token",
    "refresh_running_batches",
    "sync_pass",
]
