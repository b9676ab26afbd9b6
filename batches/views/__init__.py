"""Thin views: read the cache, validate a form, call one service, redirect with a message.

Views catch only the client's and services' error families; anything else is a bug and a 500.
"""

from .activity import activity, activity_export
from .batches import (
    batch_cancel,
    batch_detail,
    batch_export,
    batch_label,
    batch_legacy_redirect,
    batch_list,
    batch_live,
    batch_rows_live,
    sync_now,
)
from .capacity import (
    batch_capacity_cancel,
    batch_capacity_wait,
    submission_capacity_cancel,
    submission_capacity_wait,
)
from .connections import connection_detail, connection_list, connection_test
from .create import batch_create, submission_confirm
from .notifications import batch_watch
from .profile import profile, profile_email_verify
from .results import batch_download, batch_results, batch_retry, result_view, results_export
from .spend import spend, spend_export
from .webhooks import openai_webhook

__all__ = [
    "activity",
    "activity_export",
    "batch_cancel",
    "batch_capacity_cancel",
    "batch_capacity_wait",
    "batch_create",
    "batch_detail",
    "batch_download",
    "batch_export",
    "batch_label",
    "batch_legacy_redirect",
    "batch_list",
    "batch_live",
    "batch_results",
    "batch_retry",
    "batch_rows_live",
    "batch_watch",
    "connection_detail",
    "connection_list",
    "connection_test",
    "openai_webhook",
    "profile",
    "profile_email_verify",
    "result_view",
    "results_export",
    "spend",
    "spend_export",
    "submission_capacity_cancel",
    "submission_capacity_wait",
    "submission_confirm",
    "sync_now",
]
