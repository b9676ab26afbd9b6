"""Copying the upstream batch list into the cache, and keeping running batches fresh.

Two ways in:

- `batches_sync()`: the "Sync now" button and a single `manage.py sync_batches`. Walks the list,
  then retrieves every running batch: a person asked for everything now.
- `sync_pass()`: one pass of the worker (`manage.py sync_batches --loop`), made of small steps
  that tests call one by one:
  1. `backoff_remaining()`: while upstream is failing, passes wait until
     `SyncState.backoff_until` (Retry-After when upstream sent one, else doubling up to a cap).
  2. `list_lock()` and `list_walk()`: a cheap incremental walk that stops at the first page with
     nothing new or changed (one call when nothing happened), to find batches made elsewhere; a
     full walk every `SYNC_FULL_EVERY_SECONDS`, followed by `BatchTally.rebuild()`.
  3. `refresh_due_batches()`: claims running batches whose `next_refresh_at` has come, soonest
     first (`batches_claim_due()`), and retrieves each (`batch_refresh_scheduled()`). A
     running batch's open page makes it due now (`batch_refresh_soon()`), at most once per
     `DETAIL_REFRESH_SECONDS`: pages never call upstream themselves.
  4. The chores of services/housekeeping.py: at once for batches this pass stored finished
     (`ended_chores()`), and all of them on their own schedule (`housekeeping_due()`).

The schedule lives on the model (`Batch.schedule_refresh`): every stored payload, whatever
stored it, reschedules its batch, soon when it changed and a little later each time it did not.
So a batch the walk just brought is not due, and is not retrieved in the same pass: a pass
costs at most one list call (when nothing is new) plus one retrieve per due running batch.

Several workers: on PostgreSQL a claim is a short transaction that locks due rows, skipping rows
another worker holds (`select_for_update(skip_locked=True)`), and moves their `next_refresh_at`
a lease ahead before anything is fetched; the fetches happen outside it. The walk runs under a
session advisory lock, so one worker lists at a time and the others skip listing that pass
(the lock needs a direct connection or session pooling, not transaction pooling). SQLite has no
row locks: the claim is a conditional UPDATE per row, which is enough for one worker. Run a
single worker on SQLite. Whatever the order of writes, `batch_upsert` never moves a batch back.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, router, transaction
from django.db import connection as db
from django.db.models import F
from django.utils import timezone

from ..models import TERMINAL_STATUSES, Batch, BatchTally, Connection, Event, SyncState
from ..openai_client import (
    InvalidRequest,
    NotABatch,
    NotFound,
    OpenAIClient,
    OpenAIError,
    is_upstream_id,
)
from .batches import batch_upsert, batches_insert_new
from .capacity import capacity_waits_due
from .connections import get_client
from .housekeeping import ended_chores, housekeeping, housekeeping_due

logger = logging.getLogger(__name__)

# A Retry-After is honoured as sent, up to this (a junk header must not stop the worker for days).
MAX_RETRY_AFTER_WAIT = 3600.0
# The PostgreSQL advisory lock held while one worker walks a connection's list is the pair
# (LIST_LOCK_KEY, connection id); two 32-bit keys, "bw" in the first.
LIST_LOCK_KEY = 0x6277

Clock = Callable[[], dt.datetime]


# --- Results ---------------------------------------------------------------------------------


@dataclass
class SyncResult:
    """What one walk of the list (and, for `batches_sync`, the refresh after it) did."""

    pages: int = 0
    seen: int = 0
    created: int = 0
    updated: int = 0
    refreshed: int = 0
    # Listed batches whose id is not of an id's shape (openai_client.UPSTREAM_ID_REGEX): not
    # cached, since no page could link to them nor the client fetch them again.
    skipped: int = 0
    stopped_because: str = ""
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.pages} pages, {self.seen} batches seen, {self.created} new, "
            f"{self.updated} changed, {self.refreshed} refreshed"
        )
        if self.skipped:
            text += f", {self.skipped} skipped (ids batchweb cannot use)"
        if self.stopped_because:
            text += f"; stopped: {self.stopped_because}"
        return text


@dataclass
class PassResult:
    """What one pass of the worker did; `str()` is its one log line."""

    listed_pages: int = 0
    new: int = 0
    changed: int = 0
    due: int = 0  # claimed by this worker in this pass
    refreshed: int = 0
    gone: int = 0
    summarized: int = 0
    errors: int = 0
    full: bool = False
    note: str = ""
    error: str = ""
    backoff_seconds: float = 0.0
    duration: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def __str__(self) -> str:
        parts = [
            f"{self.listed_pages} pages listed, {self.new} new, {self.changed} changed, "
            f"{self.refreshed} refreshed of {self.due} due, {self.errors} errors "
            f"in {self.duration:.2f} s"
        ]
        if self.full:
            parts.append("full sync")
        if self.gone:
            parts.append(f"{self.gone} not found upstream")
        if self.summarized:
            parts.append(f"{self.summarized} results summarized")
        if self.note:
            parts.append(self.note)
        if self.error:  # first, where a person looking for the failure reads first
            parts.insert(0, f"{self.error} Next try in {self.backoff_seconds:.0f} s")
        return "; ".join(parts)


# --- Walking the list ------------------------------------------------------------------------


def list_walk(
    *,
    connection: Connection,
    client: OpenAIClient,
    full: bool = False,
    max_pages: int | None = None,
    now: dt.datetime | None = None,
    result: SyncResult | None = None,
) -> SyncResult:
    """Walk `GET /batches` newest first and store every page.

    Guards against servers that never stop: a repeated cursor, an empty page and a page cap all
    end the walk. Incremental mode (`full=False`) stops at the first page that brings nothing new
    or changed, since the list is newest first. Raises the client's errors; the pages already
    stored stay, and `result` (when given) holds the counts so far.
    """
    result = result if result is not None else SyncResult()
    max_pages = max_pages or settings.SYNC_MAX_PAGES
    after: str | None = None
    seen_cursors: set[str] = set()
    while True:
        if result.pages >= max_pages:
            result.stopped_because = f"page cap of {max_pages} reached"
            break
        page = client.list_batches(after=after, limit=100)
        result.pages += 1
        listed = [item for item in page["data"] if isinstance(item, dict) and item.get("id")]
        if not listed:
            result.stopped_because = "empty page"
            break
        items = _addressable(listed, connection=connection, result=result)
        news = 0
        unchanged = _store_unchanged_finished(
            items, connection=connection, now=now or timezone.now()
        )
        result.seen += len(unchanged)
        inserted = batches_insert_new(
            payloads=[i for i in items if str(i["id"]) not in unchanged],
            connection=connection,
            now=now or timezone.now(),
        )
        result.seen += len(inserted)
        result.created += len(inserted)
        news += len(inserted)
        for item in items:
            if str(item["id"]) in unchanged or str(item["id"]) in inserted:
                continue
            outcome = batch_upsert(payload=item, connection=connection, now=now)
            result.seen += 1
            result.created += outcome.created
            result.updated += outcome.changed and not outcome.created
            news += outcome.changed
        if not page.get("has_more"):
            result.stopped_because = "last page"
            break
        if not full and news == 0:
            result.stopped_because = "nothing new"
            break
        cursor = str(listed[-1]["id"])  # a query parameter: any id of the page will do
        if cursor in seen_cursors:
            result.stopped_because = "repeated cursor"
            break
        seen_cursors.add(cursor)
        after = cursor
    return result


def _addressable(
    items: list[dict[str, Any]], *, connection: Connection, result: SyncResult
) -> list[dict[str, Any]]:
    """The listed batches whose id can go into a URL. The others are skipped, with a warning,
    rather than cached: a link to one could not be made, nor a call to fetch it again."""
    usable = [item for item in items if is_upstream_id(str(item["id"]))]
    skipped = len(items) - len(usable)
    if skipped:
        result.skipped += skipped
        example = next(str(i["id"]) for i in items if not is_upstream_id(str(i["id"])))
        logger.warning(
            "sync %s: skipped %d listed batches whose ids are not of an id's shape (e.g. %r)",
            connection.slug,
            skipped,
            example[:40],
        )
    return usable


def _store_unchanged_finished(
    items: list[dict], *, connection: Connection, now: dt.datetime
) -> set[str]:
    """Note as seen, in one query, the finished batches a page shows exactly as cached, and
    return their ids. Most of a page is such batches; upserting each would cost a transaction, so a
    pass that finds nothing new would still write a hundred rows."""
    ids = [str(item["id"]) for item in items]
    mine = Batch.objects.filter(connection=connection)
    cached = dict(
        mine.filter(openai_id__in=ids, status__in=TERMINAL_STATUSES).values_list("openai_id", "raw")
    )
    unchanged = {str(item["id"]) for item in items if cached.get(str(item["id"])) == item}
    if unchanged:
        mine.filter(openai_id__in=unchanged).update(synced_at=now)
    return unchanged


def full_sync_due(*, state: SyncState, now: dt.datetime) -> bool:
    if state.last_full_sync_at is None:
        return True
    return (now - state.last_full_sync_at).total_seconds() >= settings.SYNC_FULL_EVERY_SECONDS


def full_sync_done(*, connection: Connection, now: dt.datetime) -> None:
    """Note the walk and recount the tallies, which deletions outside batchweb leave wrong."""
    SyncState.get(connection)
    SyncState.objects.filter(connection=connection).update(last_full_sync_at=now)
    BatchTally.rebuild()


@contextmanager
def list_lock(connection: Connection) -> Iterator[bool]:
    """Yield whether this process may walk a connection's list now: on PostgreSQL, whether it
    got that connection's advisory lock (released on leaving), so two workers never walk the
    same list at once while different lists are walked side by side; elsewhere always, since
    one worker is the limit."""
    if db.vendor != "postgresql":
        yield True
        return
    key = [LIST_LOCK_KEY, connection.pk]
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s::int, %s::int)", key)
        acquired = bool(cursor.fetchone()[0])
    if not acquired:
        yield False
        return
    try:
        yield True
    finally:
        try:
            with db.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s::int, %s::int)", key)
        except DatabaseError:
            # A broken session has lost its locks already; drop it so the next pass reconnects.
            logger.warning("could not release the list lock; closing the database connection")
            if not db.in_atomic_block:
                db.close()


# --- Refreshing running batches --------------------------------------------------------------


def batches_claim_due(
    *, connection: Connection, now: dt.datetime, until: dt.datetime, limit: int
) -> list[Batch]:
    """Claim up to `limit` running batches of a connection due at `now`, soonest first, by
    moving their `next_refresh_at` to `until` (the lease) before anyone fetches them."""
    due = Batch.objects.filter(connection=connection).due_for_refresh(now)
    if db.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
            if ids:
                Batch.objects.filter(pk__in=ids).update(next_refresh_at=until)
    else:
        # No row locks: a row is ours only if nobody moved it since we read it.
        ids = [
            pk
            for pk, due_at in due.values_list("pk", "next_refresh_at")[:limit]
            if Batch.objects.filter(pk=pk, next_refresh_at=due_at).update(next_refresh_at=until)
        ]
    found = Batch.objects.select_related("connection").in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


def batch_refresh_soon(*, batch_id: int, now: dt.datetime | None = None) -> bool:
    """Ask the worker to retrieve a running batch at its next pass, for someone looking at it:
    make it due now, unless upstream was read for it less than DETAIL_REFRESH_SECONDS ago or
    its schedule has it due within that anyway. So however many people look, their looking
    costs at most one retrieve per batch per DETAIL_REFRESH_SECONDS, and never calls upstream
    in the request. Returns whether it moved the batch.

    One read first, in SQL of its own (a page served from the cache asks this on every load:
    the ORM's compiling would cost ten times the query, and a read takes no write lock on
    SQLite), then, when the bound allows, a conditional UPDATE of the same rule that needs no
    lock: of two people asking at once, one moves it. `next_refresh_at` is shown on no page,
    so the write draws no page again. A batch a worker is fetching at that moment (claimed,
    its lease ahead) may be made due again; the fetch's store reschedules it, so at most one
    more retrieve follows.
    """
    now = now or timezone.now()
    bound = dt.timedelta(seconds=settings.DETAIL_REFRESH_SECONDS)
    found = _refresh_facts(batch_id)
    if found is None:
        return False
    running, due_at, synced_at = found
    if not (running and due_at and due_at > now + bound and synced_at < now - bound):
        return False
    wanted = Batch.objects.filter(
        pk=batch_id, running=True, next_refresh_at__gt=now + bound, synced_at__lt=now - bound
    )
    return bool(wanted.update(next_refresh_at=now))


def _refresh_facts(batch_id: int) -> tuple[bool, dt.datetime | None, dt.datetime] | None:
    """Whether a batch is running, when it is due and when upstream was last read for it."""
    alias = router.db_for_read(Batch)
    table = connections[alias].ops.quote_name(Batch._meta.db_table)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"SELECT running, next_refresh_at, synced_at FROM {table} WHERE id = %s",  # noqa: S608
            [batch_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    running, due_at, synced_at = row
    return bool(running), _aware(due_at), _aware(synced_at)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """A datetime read in SQL of its own: SQLite gives it naive, in UTC."""
    if value is None or timezone.is_aware(value):
        return value
    return value.replace(tzinfo=dt.UTC)


def batches_release(*, batches: list[Batch], until: dt.datetime, now: dt.datetime) -> None:
    """Give back claimed batches that were not fetched, unless something rescheduled them."""
    pks = [batch.pk for batch in batches]
    Batch.objects.filter(pk__in=pks, next_refresh_at=until).update(next_refresh_at=now)


def batch_refresh_scheduled(
    *,
    batch: Batch,
    client: OpenAIClient,
    now: dt.datetime | None = None,
    lease_until: dt.datetime | None = None,
) -> str:
    """Retrieve one batch for the worker and store it (which reschedules it).

    Returns "changed", "unchanged", "stale" (upstream answered with an older state than the
    cache holds), "gone" or "unreadable": a batch upstream answers 404 (or 400) for gets
    `last_error`, shown on its page, and is not asked for again before
    `SYNC_GONE_INTERVAL_SECONDS`; one whose answer is not a batch (no status, say) gets
    `last_error` too, and is asked for again later each time, as if unchanged, so it never holds
    up the other batches of its connection. Raises the client's other errors.
    """
    try:
        payload = client.retrieve_batch(batch.openai_id)
    except (NotFound, InvalidRequest) as error:
        when = now or timezone.now()
        interval = settings.SYNC_GONE_INTERVAL_SECONDS
        Batch.objects.filter(pk=batch.pk).update(
            last_error=str(error)[:1000],
            refresh_interval=interval,
            next_refresh_at=when + dt.timedelta(seconds=interval),
        )
        return "gone"
    except NotABatch as error:
        when = now or timezone.now()
        interval = min(
            max(
                batch.refresh_interval * settings.SYNC_REFRESH_GROWTH,
                settings.SYNC_REFRESH_MIN_SECONDS,
            ),
            settings.SYNC_REFRESH_MAX_SECONDS,
        )
        Batch.objects.filter(pk=batch.pk).update(
            last_error=str(error)[:1000],
            refresh_interval=interval,
            next_refresh_at=when + dt.timedelta(seconds=interval),
        )
        return "unreadable"
    outcome = batch_upsert(payload=payload, connection=batch.connection, now=now)
    stored = outcome.batch
    if stored.last_error and not stored.is_terminal:
        Batch.objects.filter(pk=stored.pk).update(last_error="")  # upstream knows it again
    if outcome.stale:
        if lease_until is not None and not stored.is_terminal:
            # Nothing was stored, so nothing rescheduled it: do not leave it on the lease.
            when = now or timezone.now()
            interval = stored.refresh_interval or settings.SYNC_REFRESH_MIN_SECONDS
            Batch.objects.filter(pk=stored.pk, next_refresh_at=lease_until).update(
                next_refresh_at=when + dt.timedelta(seconds=interval)
            )
        return "stale"
    return "changed" if outcome.changed else "unchanged"


def refresh_due_batches(
    *,
    connection: Connection,
    client: OpenAIClient,
    due_at: dt.datetime,
    result: PassResult | None = None,
    now: dt.datetime | None = None,
    stop: Callable[[], bool] | None = None,
) -> PassResult:
    """Claim and retrieve the running batches due at `due_at`, a few at a time, soonest first.

    A batch rescheduled during the pass is due after `due_at`, so it is not fetched twice in
    one pass. A claim that has used half its lease is given back rather than risk another worker
    fetching the same batch. Raises the client's errors (after giving back what is left).
    """
    result = result if result is not None else PassResult()
    clock: Clock = (lambda: now) if now is not None else timezone.now
    lease = settings.SYNC_LEASE_SECONDS
    size = int(settings.SYNC_CLAIM_SIZE)
    cap = int(settings.SYNC_MAX_REFRESHES_PER_PASS)
    while result.due < cap and not (stop and stop()):
        until = clock() + dt.timedelta(seconds=lease)
        pending = batches_claim_due(
            connection=connection, now=due_at, until=until, limit=min(size, cap - result.due)
        )
        if not pending:
            break
        result.due += len(pending)
        claimed = time.monotonic()
        try:
            while pending:
                if (stop and stop()) or time.monotonic() - claimed > lease / 2:
                    break
                outcome = batch_refresh_scheduled(
                    batch=pending[0], client=client, now=now, lease_until=until
                )
                pending.pop(0)
                if outcome == "gone":
                    result.gone += 1
                    result.errors += 1
                elif outcome == "unreadable":
                    result.errors += 1
                else:
                    result.refreshed += 1
                    result.changed += outcome == "changed"
        finally:
            if pending:
                batches_release(batches=pending, until=until, now=clock())
        if pending:
            break
    return result


def refresh_running_batches(
    *, connection: Connection, client: OpenAIClient | None = None, limit: int = 500
) -> int:
    """Retrieve a connection's cached batches that are not terminal, due or not, the most
    overdue first, at most `limit`. Returns how many were refreshed."""
    client = client or get_client(connection=connection)
    count = 0
    running = Batch.objects.filter(connection=connection).running().select_related("connection")
    running = running.order_by(F("next_refresh_at").asc(nulls_first=True), "created_at")
    for batch in running[:limit]:
        if batch_refresh_scheduled(batch=batch, client=client) not in ("gone", "unreadable"):
            count += 1
    return count


# --- Upstream failures -----------------------------------------------------------------------


def backoff_remaining(*, connection: Connection, now: dt.datetime) -> float:
    """Seconds until the worker may call a connection's upstream again (0 when it may now)."""
    until = SyncState.get(connection).backoff_until
    return max(0.0, (until - now).total_seconds()) if until else 0.0


def backoff_seconds(*, error: OpenAIError, state: SyncState) -> float:
    """How long to leave upstream alone after `error`: its Retry-After if it sent one, else
    twice the last wait (from `SYNC_BACKOFF_MIN_SECONDS` up to `SYNC_BACKOFF_MAX_SECONDS`)."""
    if error.retry_after is not None and error.retry_after > 0:
        return min(float(error.retry_after), MAX_RETRY_AFTER_WAIT)
    previous = 0.0
    if state.failing_since and state.backoff_until and state.last_error_at:
        previous = (state.backoff_until - state.last_error_at).total_seconds()
    low, high = settings.SYNC_BACKOFF_MIN_SECONDS, settings.SYNC_BACKOFF_MAX_SECONDS
    return min(high, max(low, previous * 2))


def record_upstream_failure(
    *, connection: Connection, error: OpenAIError, now: dt.datetime
) -> float:
    """Store the failure where the pages show it, and when to try again. Returns the wait."""
    state = SyncState.get(connection)
    wait = backoff_seconds(error=error, state=state)
    state.record_failure(error, now=now, backoff_until=now + dt.timedelta(seconds=wait))
    return wait


# --- The two ways in -------------------------------------------------------------------------


def batches_sync(
    *,
    connection: Connection,
    client: OpenAIClient | None = None,
    full: bool = False,
    max_pages: int | None = None,
    refresh_running: bool = True,
    refresh_limit: int = 500,
) -> SyncResult:
    """Walk the list (see `list_walk`), then retrieve every running batch.

    For a person who asked for it now: it ignores the worker's schedule and backoff. A failure
    is recorded on `SyncState` for the pages and raised.
    """
    result = SyncResult()
    try:
        client = client or get_client(connection=connection)
        list_walk(
            connection=connection, client=client, full=full, max_pages=max_pages, result=result
        )
        if full:
            full_sync_done(connection=connection, now=timezone.now())
        if refresh_running:
            result.refreshed = refresh_running_batches(
                connection=connection, client=client, limit=refresh_limit
            )
    except OpenAIError as error:
        SyncState.get(connection).record_failure(error)
        raise
    SyncState.get(connection).record_success(now=timezone.now())
    logger.info("sync %s: %s", connection.slug, result)
    return result


def sync_now(*, connection: Connection, user: Any) -> SyncResult:
    """ "Sync now" for a person who is waiting: bounded (the newest pages, a bounded number of
    refreshes; the worker does the rest) and recorded in the audit trail either way."""
    try:
        result = batches_sync(
            connection=connection,
            client=get_client(connection=connection, interactive=True),
            max_pages=settings.SYNC_NOW_MAX_PAGES,
            refresh_limit=settings.SYNC_NOW_MAX_REFRESHES,
        )
    except OpenAIError as error:
        Event.record(Event.Action.SYNC_FAILED, user=user, connection=connection, error=error)
        raise
    Event.record(
        Event.Action.SYNC,
        user=user,
        connection=connection,
        detail=f"{result.created} new, {result.updated} changed, {result.refreshed} refreshed",
    )
    return result


def sync_pass(
    *,
    connection: Connection,
    client: OpenAIClient | None = None,
    now: dt.datetime | None = None,
    full: bool = False,
    stop: Callable[[], bool] | None = None,
) -> PassResult:
    """One pass of the worker over one connection: wait out its backoff, walk its list if no
    other worker is, then refresh its due running batches. `now` pins the clock (tests,
    benchmarks); `full` forces a full walk; `stop` is asked between fetches. Upstream failures
    are recorded and end the pass; database errors are raised for the caller to handle."""
    started = time.monotonic()
    clock: Clock = (lambda: now) if now is not None else timezone.now
    pass_start = clock()
    result = PassResult()
    waiting = backoff_remaining(connection=connection, now=pass_start)
    if waiting:
        result.backoff_seconds = waiting
        result.note = f"upstream failing: next try in {waiting:.0f} s"
        result.duration = time.monotonic() - started
        return result
    try:
        client = client or get_client(connection=connection)
        with list_lock(connection) as may_list:
            if may_list:
                _walk_for_pass(
                    connection=connection,
                    client=client,
                    result=result,
                    full=full,
                    now=now,
                    clock=clock,
                )
            else:
                result.note = "list skipped: another worker is listing"
        refresh_due_batches(
            connection=connection,
            client=client,
            due_at=pass_start,
            result=result,
            now=now,
            stop=stop,
        )
        if result.new or result.changed:
            ended_chores(
                connection=connection, client=client, since=pass_start, now=clock(), result=result
            )
        if housekeeping_due(connection):
            housekeeping(connection=connection, client=client, now=clock(), result=result)
        # Capacity: submit again what waits for room, once the refreshed cache shows some.
        waits = capacity_waits_due(connection=connection, client=client, now=clock())
        if waits.submitted or waits.gave_up or waits.failed:
            result.note = "; ".join(filter(None, [result.note, str(waits)]))
    except OpenAIError as error:
        result.errors += 1
        result.error = str(error)
        result.backoff_seconds = record_upstream_failure(
            connection=connection, error=error, now=clock()
        )
    else:
        if result.listed_pages or result.refreshed or result.gone:
            SyncState.get(connection).record_success(now=clock())
    result.duration = time.monotonic() - started
    return result


def _walk_for_pass(
    *,
    connection: Connection,
    client: OpenAIClient,
    result: PassResult,
    full: bool,
    now: dt.datetime | None,
    clock: Clock,
) -> None:
    # Read under the lock: another worker may have finished the full walk a moment ago.
    result.full = full or full_sync_due(state=SyncState.get(connection), now=clock())
    walk = SyncResult()
    try:
        list_walk(connection=connection, client=client, full=result.full, now=now, result=walk)
    finally:
        result.listed_pages, result.new, result.changed = walk.pages, walk.created, walk.updated
    if result.full:
        full_sync_done(connection=connection, now=clock())
