"""The list's rows, rendered once per version of a batch and kept in Django's cache.

Rendering 50 rows through the template engine was most of a list request (issue 14); a row
changes only when its batch does. A row's key is a digest of everything it may show: every
field of the batch as loaded (but the bookkeeping no page shows, such as the time of the last
sync), its connection's slug and name, its creator's name, its finish-time estimate in words,
and the templates' own text. Any write to a batch (a sync, a
label, a cost, a rename) changes the key, so a cached row is never older than the batch just
read from the database; nothing is ever invalidated, old keys just age out.

Access is not the cache's business: rows are looked up only for batches the request's own
query returned (filtered by what the person may see), and a row holds nothing that depends on
who looks (no buttons, no request). The one part that changes with the clock, "created 3 h
ago", is kept as reltime's mark and put in by the page cache at serve time.

The default cache is per process (LocMemCache): each gunicorn worker keeps its own rows. With
CACHE_URL (Redis) every web process shares them; correctness never depends on sharing, since
the key follows the batch's state in the database every worker reads, and the cache's keys
name the code's version (settings.CACHES).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from typing import Any

from django.core.cache import caches
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from ..models import USER_KEY, Access, Batch
from ..models.batches import TERMINAL_STATUSES, BatchQuerySet
from ..templatetags.batchweb import ago_later
from .pages import templates_digest

ROW_TEMPLATE = "batches/includes/row.html"
CACHE_ALIAS = "rows"
TIMEOUT_SECONDS = 24 * 3600


def rendered_rows(
    batches: Sequence[Batch], *, show_connection: bool, oob: bool = False
) -> list[SafeString]:
    """The table rows of `batches` (each with `eta` set), in order, from the cache where it
    has them. Each "3 h ago" is left as reltime's mark: the page that serves the rows
    (page_cache) puts the words in as of its request."""
    rows_cache = caches[CACHE_ALIAS]
    keys = [_key(b, show_connection=show_connection, oob=oob) for b in batches]
    found = rows_cache.get_many(keys)
    fresh = {}
    with ago_later():
        for batch, key in zip(batches, keys, strict=True):
            if key not in found:
                fresh[key] = render_to_string(
                    ROW_TEMPLATE, {"batch": batch, "show_connection": show_connection, "oob": oob}
                )
    if fresh:
        rows_cache.set_many(fresh, timeout=TIMEOUT_SECONDS)
    # The template escaped them.
    return [mark_safe(found.get(key) or fresh[key]) for key in keys]  # noqa: S308


# What a list row shows of its batch, read as values for the list (no model object is made for
# a row the cache has): `page_rows` keys a finished batch's row by these. The row template and
# Batch's methods it calls (status, progress, cost, creator) read nothing else; a row whose
# batch runs also shows its finish-time estimate, which needs the batch object.
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


def page_rows(rows: Sequence[dict[str, Any]], *, access: Access, show_connection: bool) -> list:
    """The list's rows for ROWS (dicts of ROW_COLUMNS, newest first), in order: a finished
    batch's from the cache by its values, with no model object made; those the cache lacks and
    those of running batches (their estimate changes with the clock) drawn from their batches,
    fetched in one query. Drawing the list afresh after a write made 50 model objects and 50
    keys of them per request; the values cost a fifth of that (bench/run.py "list (drawn)")."""
    connections = {c.pk: c for c in access.connections}
    keys: dict[int, str] = {}
    for row in rows:
        if row["status"] in TERMINAL_STATUSES and row["connection_id"] in connections:
            keys[row["id"]] = _values_key(row, connections[row["connection_id"]], show_connection)
    found = caches[CACHE_ALIAS].get_many(list(keys.values())) if keys else {}
    missing = [r["id"] for r in rows if keys.get(r["id"]) not in found]
    drawn: dict[int, SafeString] = {}
    if missing:
        batches = list(Batch.objects.for_list().filter(pk__in=missing))
        access.attach(batches)
        from ..services import etas_attach

        etas_attach(batches=[b for b in batches if not b.is_terminal])
        fresh = {}
        for batch, html in zip(
            batches, rendered_rows(batches, show_connection=show_connection), strict=True
        ):
            drawn[batch.pk] = html
            if batch.pk in keys:  # a finished row: kept under its values too
                fresh[keys[batch.pk]] = str(html)
        if fresh:
            caches[CACHE_ALIAS].set_many(fresh, timeout=TIMEOUT_SECONDS)
    # The template escaped them.
    return [drawn.get(r["id"]) or mark_safe(found[keys[r["id"]]]) for r in rows]  # noqa: S308


def _values_key(row: dict[str, Any], connection: Any, show_connection: bool) -> str:
    parts = (
        tuple(row[column] for column in ROW_COLUMNS),
        connection.slug,
        connection.name,
        show_connection,
        templates_digest(),  # a deploy that changes the templates makes new keys
    )
    digest = hashlib.blake2b(pickle.dumps(parts, protocol=5), digest_size=16).hexdigest()
    return f"row-values:{row['id']}:{digest}"


def _key(batch: Batch, *, show_connection: bool, oob: bool) -> str:
    eta = getattr(batch, "eta", None)
    # Every field as loaded but those no page shows (`unseen_fields`: the refresh lease, the
    # time of the last sync, which every pass moves), and not the estimate (it holds the time
    # of the request).
    unseen = BatchQuerySet.unseen_fields | {"eta"}
    state = [(k, v) for k, v in batch.__dict__.items() if k[0] != "_" and k not in unseen]
    parts: tuple[Any, ...] = (
        state,
        batch.connection.slug,
        batch.connection.name,
        batch.creator_name(),
        (eta.state, eta.short(), eta.text()) if eta else None,
        show_connection,
        oob,
        templates_digest(),  # a deploy that changes the templates makes new keys
    )
    digest = hashlib.blake2b(pickle.dumps(parts, protocol=5), digest_size=16).hexdigest()
    return f"row:{batch.pk}:{digest}"
