"""The sync worker's chores, on a schedule of their own: once every
SYNC_HOUSEKEEPING_EVERY_SECONDS (BATCHWEB_SYNC_HOUSEKEEPING_EVERY_SECONDS, a minute) per
connection and worker process (`housekeeping_due`), after a pass's refreshes, `sync_pass` calls
`housekeeping`: summarize what finished lately and build its results table, remove local files
nobody needs any more, price finished batches, roll up spend, thin the progress history and
warn of running batches at risk of expiring. They look at every finished batch, which is why
they do not run every pass.

`ended_chores` is their immediate part: the pass that stores a batch finished prices and
summarizes it at once, so its page shows its cost and results as soon as it shows it ended.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

from django.conf import settings

from ..models import Connection
from ..openai_client import OpenAIClient
from .costs import costs_due
from .estimates import progress_snapshots_thin
from .notifications import notifications_at_risk
from .result_files import results_cleanup, results_due, summaries_due
from .spend import spend_rollup
from .submissions import submissions_cleanup

if TYPE_CHECKING:
    from .sync import PassResult


def ended_chores(
    *,
    connection: Connection,
    client: OpenAIClient,
    since: dt.datetime,
    now: dt.datetime,
    result: PassResult,
) -> None:
    """Price and summarize the batches this pass stored finished, so that a batch's page shows
    its cost and results as soon as it shows it ended, not at the next housekeeping (up to a
    minute later). Only batches stored since SINCE (the pass's start), with housekeeping's
    bounds: a first sync's old history is left to it."""
    costs_due(connection=connection, limit=100, now=now, synced_since=since)
    window = dt.timedelta(seconds=settings.SYNC_SUMMARY_WINDOW_SECONDS)
    result.summarized += summaries_due(
        connection=connection,
        client=client,
        limit=3,
        finished_since=since - window,
        synced_since=since,
    )


# When this process last did each connection's chores (connection id -> monotonic seconds).
_last_housekeeping: dict[int, float] = {}


def housekeeping_due(connection: Connection) -> bool:
    """Chores look at every finished batch: once a minute per worker is plenty, every pass
    (every few seconds) would make them the most expensive part of an idle pass."""
    last = _last_housekeeping.get(connection.pk, -float("inf"))
    if time.monotonic() - last < settings.SYNC_HOUSEKEEPING_EVERY_SECONDS:
        return False
    _last_housekeeping[connection.pk] = time.monotonic()
    return True


def housekeeping(
    *, connection: Connection, client: OpenAIClient, now: dt.datetime, result: PassResult
) -> None:
    """The worker's small chores after the refreshes: summarize what finished lately, remove
    local files nobody needs any more (result copies past retention, unconfirmed uploads), thin
    the progress history of finished batches, and warn of running batches at risk of expiring."""
    since = now - dt.timedelta(seconds=settings.SYNC_SUMMARY_WINDOW_SECONDS)
    result.summarized = summaries_due(
        connection=connection, client=client, limit=3, finished_since=since
    )
    results_due(connection=connection, client=client, finished_since=since)
    results_cleanup(now=now)
    submissions_cleanup(now=now)
    # Costs: computed once per finished batch, here rather than on a page view. No HTTP, a few
    # queries each (about 1 ms on SQLite): 100 a pass prices a demo's month of history in the
    # first pass, and 100,000 batches of a first sync in under a day, for 0.1 s a minute.
    costs_due(connection=connection, limit=100, now=now)
    # Spend: roll up the days whose batches changed, so the spend page reads a few rows a day.
    spend_rollup(connection=connection, seconds=2.0)
    # Finish-time estimates: bound the snapshot history, and warn of batches at risk.
    progress_snapshots_thin(now=now, finished_since=since)
    notifications_at_risk(now=now, connection=connection)
