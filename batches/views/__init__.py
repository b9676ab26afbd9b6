"""Thin views: read the cache, validate a form, call one service, redirect with a message.

Views catch only the client's and services' error families; anything else is a bug and a 500.
"""

from .batches import (
    activity,
    batch_cancel,
    batch_detail,
    batch_export,
    batch_legacy_redirect,
    batch_list,
    batch_live,
    batch_rows_live,
    sync_now,
)
from .connections import connection_detail, connection_list, connection_test
from .create import batch_create, submission_confirm
from .results import batch_download, batch_results, batch_retry, result_view, results_export

__all__ = [
    "activity",
    "batch_cancel",
    "batch_create",
    "batch_detail",
    "batch_download",
    "batch_export",
    "batch_legacy_redirect",
    "batch_list",
    "batch_live",
    "batch_results",
    "batch_retry",
    "batch_rows_live",
    "connection_detail",
    "connection_list",
    "connection_test",
    "result_view",
    "results_export",
    "submission_confirm",
    "sync_now",
]
