"""The list's rows, rendered once per version of what each shows and kept in Django's cache.

Rendering 50 rows through the template engine was most of a list request (issue 14); a row
changes only when what it shows does. The list reads its rows as the database stores them
(ROW_COLUMNS, no model object made, no date parsed), and a row's key is a digest of what it
shows (`_key`): those values, its connection's slug and name, and for a running batch its
finish-time estimate in words (made from estimates.ETA_COLUMNS); plus the templates' own
text. A write to a batch (a sync, a label, a cost, a rename) changes its values and so its
key: a cached row is never older than the batch just read from the database, and nothing is
ever invalidated (old keys age out). Only a row the cache lacks loads its batch and draws it.

Access is not the cache's business: rows are looked up only for batches the request's own
query returned (filtered by what the person may see, `Batch.objects.visible_to`), and a row
holds nothing that depends on who looks (no buttons, no request). The one part that changes
with the clock, "created 3 h ago", is kept as reltime's mark and put in by the page cache at
serve time.

The default cache is per process (LocMemCache): each gunicorn worker keeps its own rows. With
CACHE_URL (Redis) every web process shares them; correctness never depends on sharing, since
the key follows the batch's state in the database every worker reads, and the cache's keys
name the code's version (settings.CACHES). In front of either, each process keeps the rows it
used lately as they are (`LocalRows`): a key never names two versions, so that copy cannot be
stale, and a list drawn again after a write unpickles (or asks Redis for) only its new rows.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from django.core.cache import caches
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from ..models import USER_KEY, Access, Batch
from ..models.batches import TERMINAL_STATUSES
from ..models.stored import from_stored
from ..services import estimates
from ..templatetags.batchweb import ago_later
from . import keys
from .pages import templates_digest


class LocalRows:
    """The rows this process drew or read lately, in front of the shared "rows" cache. A key
    names one version of one row for good (a digest of what it shows and of the templates), so
    a copy kept here is never stale; serving it costs no unpickling and, with Redis, no round
    trip. Bounded: the oldest entries go first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: dict[str, str] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        # Without the lock: one `get` a key is atomic, where a look then a read could meet
        # another thread's eviction in between.
        found = {key: self._rows.get(key) for key in keys}
        return {key: html for key, html in found.items() if html is not None}

    def set_many(self, rows: dict[str, str]) -> None:
        with self._lock:
            self._rows.update(rows)
            while len(self._rows) > self.size:
                del self._rows[next(iter(self._rows))]

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


# About 2 KB a row: a few MB a process, several pages of every list people keep open.
_local = LocalRows(size=3000)


def forget() -> None:
    """Drop every kept row, here and in the shared cache (tests and benchmarks that want rows
    drawn again)."""
    _local.clear()
    caches[CACHE_ALIAS].clear()


ROW_TEMPLATE = "batches/includes/row.html"
CACHE_ALIAS = "rows"
TIMEOUT_SECONDS = 24 * 3600
# How long a running batch's snapshots are kept (`_histories`).
HISTORY_SECONDS = 60

# What a list row shows of its batch, read as the database stores it (`stored_values`: no model
# object, no date parsed) and keyed by: the row template and the Batch methods it calls
# (status, progress, cost, creator) read nothing else. A running row also shows its estimate,
# made from estimates.ETA_COLUMNS (tests/test_row_cache.py holds both lists to it).
ROW_COLUMNS = (
    "id",
    "connection_id",
    "openai_id",
    "status",
    "label",
    "request_total",
    "request_completed",
    "request_failed",
    "cost_usd",
    "cost_note",
    "cost_source",
    "cost_computed_at",
    "model",
    "endpoint",
    "created_at",
    "created_by_id",
    "created_by__username",
    f"metadata__{USER_KEY}",
)
# What the list reads of each batch: what its row shows, and what a running row's estimate is
# made from.
LIST_COLUMNS = ROW_COLUMNS + tuple(c for c in estimates.ETA_COLUMNS if c not in ROW_COLUMNS)


def page_rows(
    rows: Sequence[dict[str, Any]], *, access: Access, show_connection: bool, oob: bool = False
) -> list[SafeString]:
    """The table rows for ROWS (stored values of LIST_COLUMNS, in the order to show), each
    from the cache by what it shows; those the cache lacks drawn from their batches, fetched
    in one query. The running rows' estimates are made from their values and their progress
    snapshots (kept, or one query for all those the cache lacks). OOB: rows for htmx to swap in
    by id (the list's live rows)."""
    connections = {c.pk: c for c in access.connections}
    etas = _estimates([row for row in rows if row["status"] not in TERMINAL_STATUSES])
    # What every row's key shares: how it is drawn, and the templates (a deploy that changes
    # them makes new keys).
    shared = (show_connection, oob, templates_digest())
    keys = {
        row["id"]: _key(row, connections[row["connection_id"]], etas.get(row["id"]), shared)
        for row in rows
        if row["connection_id"] in connections
    }
    found = _local.get_many(keys.values())
    wanted = [key for key in keys.values() if key not in found]
    rows_cache = caches[CACHE_ALIAS]
    if wanted:
        read = rows_cache.get_many(wanted)
        _local.set_many(read)
        found.update(read)
    missing = [row["id"] for row in rows if keys.get(row["id"]) not in found]
    drawn: dict[int, str] = {}
    if missing:
        batches = list(Batch.objects.for_list().filter(pk__in=missing))
        access.attach(batches)
        with ago_later():
            for batch in batches:
                batch.eta = etas.get(batch.pk)  # as keyed
                context = {"batch": batch, "show_connection": show_connection, "oob": oob}
                drawn[batch.pk] = render_to_string(ROW_TEMPLATE, context)
        fresh = {keys[pk]: html for pk, html in drawn.items() if pk in keys}
        if fresh:
            rows_cache.set_many(fresh, timeout=TIMEOUT_SECONDS)
            _local.set_many(fresh)
    shown = (drawn.get(row["id"]) or found.get(keys.get(row["id"], "")) for row in rows)
    # The template escaped them. A batch deleted since the page's query is left out.
    return [SafeString(html) for html in shown if html]


def _estimates(rows: list[dict[str, Any]]) -> dict[int, estimates.Eta | None]:
    """The finish-time estimates of the batches of these rows, from batch objects of their
    ETA_COLUMNS alone (any other field asked for would be a query per row) and their progress
    snapshots, kept per batch by its status and counts (`_histories`)."""
    batches = from_stored(Batch, rows, estimates.ETA_COLUMNS)
    by_id = {row["id"]: row for row in rows}
    estimates.etas_attach(batches=batches, histories=partial(_histories, by_id))
    return {b.pk: b.eta for b in batches}


def _histories(
    rows: dict[int, dict[str, Any]], batches: list[Batch], *, now: Any
) -> dict[int, list[tuple[Any, int]]]:
    """`estimates.history` of BATCHES, each kept under its status and counts (ROWS, by id, as
    stored): a snapshot is only ever written with a change to them, in the same transaction,
    so a kept history lacks none. Kept HISTORY_SECONDS at most, and read back as `history`
    would read it then (`in_lookback`): the same points as a query, without the query."""
    cache = caches[keys.PAGES]
    wanted = {b.pk: keys.history_key(rows[b.pk]) for b in batches}
    found = cache.get_many(list(wanted.values())) if wanted else {}
    missing = [b for b in batches if wanted[b.pk] not in found]
    fresh = estimates.history(missing, now=now) if missing else {}
    if fresh:
        cache.set_many({wanted[pk]: points for pk, points in fresh.items()}, HISTORY_SECONDS)
    return {
        b.pk: fresh[b.pk] if b.pk in fresh else estimates.in_lookback(found[wanted[b.pk]], now=now)
        for b in batches
    }


def _key(
    row: dict[str, Any], connection: Any, eta: estimates.Eta | None, shared: tuple[Any, ...]
) -> str:
    parts = (
        tuple(row[column] for column in ROW_COLUMNS),
        connection.slug,
        connection.name,
        (eta.state, eta.short(), eta.text()) if eta else None,
        shared,
    )
    # repr() of stored values (text, numbers, dates, None) names them exactly, and is several
    # times cheaper than pickling them: 50 keys are made for every list drawn.
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()
    return f"row:{row['id']}:{digest}"
