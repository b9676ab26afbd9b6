"""The cache generations: numbers that grow with every committed write that changes what a
cached page shows, one for everyone (people, groups, permissions, connections, prices) and one
per connection (its batches, their tallies, result files, capacity, watches, audit entries of
its batches). Cached pages are kept under the numbers they were drawn at
(batches/cache/pages.py): everyone's and those of the connections the page shows. A write
makes every older copy unreachable at once: nothing is invalidated one key at a time, and no
process has to be told (djangoproject.com's dashboard keeps its cache this way). A sync pass
that changes a batch of one connection leaves the pages of the others, and the pages of people
who may not see it, as they were.

Which number a row is part of is decided in one place, `scope_of` (and `scope_path` for query
sets): the connection it names, directly or through its batch; everyone's for a row of no
connection.

The rule, in one place (`SHOWN`, below): a write raises the number when, and only when, it is
to a row a page shows. That is every row of the models listed there, except

- fields a model's query set names as `unseen_fields` (a refresh lease, a roll-up flag, when a
  result file was last opened): a save or update of those alone raises nothing;
- rows the model's predicate in `SHOWN` says no cached page shows: an audit `Event` with no
  batch (sign-ins and failed sign-ins, refused API calls, token use, admin changes, webhooks
  about batches not cached). The Activity page shows those, and it is drawn on every request,
  never kept under the generation (tests/test_strangers.py checks that it shows them at once).

Everything else is never watched, so it never raises the number: sessions, django-axes'
failed-attempt rows, API tokens' `last_used_at`, the refused-webhook counters, webhook
delivery rows, the outbox. This is what keeps a stranger's requests from emptying the page
cache (issue 19): nothing an anonymous request may write is a row a page shows.

Writes reach the number three ways: `post_save`/`post_delete`/`m2m_changed` receivers on the
models in `SHOWN` (connected in `watch_writes`, from the app's ready()); the query sets of
those models, whose `update`, `bulk_create` and `bulk_update` send no signal
(`GenerationQuerySet`); and `bump()` called by code that writes with SQL of its own.

Each number is raised once per transaction, after it commits: raised earlier, a page drawn
by another process before the commit would be kept under the new number with the old data.
The write is a one-row UPDATE in its own autocommit, so two transactions never wait on it.
Migrations raise everyone's number when they end (`migrated`): a data migration changes rows
without the receivers.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import (
    DatabaseError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    connections,
    models,
    router,
    transaction,
)

from ..models.generation import ROW, CacheGeneration


@dataclass(frozen=True)
class Snapshot:
    """The numbers as read at one moment: everyone's and each connection's (0: never raised)."""

    everyone: int = 0
    by_connection: tuple[tuple[int, int], ...] = ()

    def of(self, connection_id: int) -> int:
        return dict(self.by_connection).get(connection_id, 0)

    def scope(self, connection_ids: Iterable[int]) -> tuple[int, ...]:
        """What a page about CONNECTION_IDS is drawn from: everyone's number, then each of
        theirs, in order: part of the page's cache key."""
        numbers = dict(self.by_connection)
        return (self.everyone, *(numbers.get(pk, 0) for pk in sorted(connection_ids)))

    @property
    def total(self) -> int:
        """The sum of all numbers: grows with every raise, whichever it is."""
        return self.everyone + sum(value for _pk, value in self.by_connection)


def snapshot() -> Snapshot:
    """All the numbers now: one read of a few rows (one per connection), in SQL of its own (the
    ORM's compiling cost more than the query on a page served from the cache)."""
    alias = router.db_for_read(CacheGeneration)
    table = connections[alias].ops.quote_name(CacheGeneration._meta.db_table)
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT id, connection_id, value FROM {table}")  # noqa: S608
        rows = cursor.fetchall()
    everyone = next((value for pk, conn, value in rows if pk == ROW), 0)
    by_connection = tuple(sorted((conn, value) for _pk, conn, value in rows if conn is not None))
    return Snapshot(everyone, by_connection)


def current() -> int:
    """How many times any number was raised (`Snapshot.total`): to tell whether a write raised
    one (tests, benchmarks)."""
    return snapshot().total


def of(holder: Any) -> Snapshot:
    """`snapshot()`, kept on `holder` (the request's user) and read again only when this
    thread has written since (a request that refreshes a batch, then draws its page)."""
    writes = _writes.get()
    if getattr(holder, "_bw_generation_writes", None) != writes:
        holder._bw_generation = snapshot()
        holder._bw_generation_writes = writes
    return holder._bw_generation


def keep(holder: Any, value: Snapshot) -> None:
    """Have `of(holder)` answer `value`, just read by the caller."""
    holder._bw_generation = value
    holder._bw_generation_writes = _writes.get()


# Writes this thread has made (and commits it has seen) that raise a number: numbers read
# before one of them are read again.
_writes: contextvars.ContextVar[int] = contextvars.ContextVar("bw_generation_writes", default=0)

EVERYONE = None  # the scope of a row of no connection


def bump(using: str | None = None, scope: int | None = EVERYONE) -> None:
    """Raise SCOPE's number (a connection's id, or EVERYONE) once the current transaction
    commits (at once outside one); several writes in one transaction raise each scope once."""
    _writes.set(_writes.get() + 1)
    alias = using or router.db_for_write(CacheGeneration)
    connection = connections[alias]
    _pending(alias).add(scope)
    # Already due at this commit: the callback is in Django's list for the transaction.
    if connection.in_atomic_block and any(
        getattr(func, "func", None) is _raise_pending
        for _sids, func, *_ in connection.run_on_commit
    ):
        return
    _on_commit(partial(_raise_pending, alias), using=alias)


# Django's TestCase never commits, so the tests' conftest runs the callback at once instead.
_on_commit = transaction.on_commit


def _pending(alias: str) -> set[int | None]:
    """The scopes written in this thread's transaction on ALIAS, not raised yet."""
    return connections[alias].__dict__.setdefault("_bw_generation_scopes", set())


def _raise_pending(alias: str) -> None:
    """Raise every scope written in the transaction that just committed, everyone's first."""
    pending = _pending(alias)
    scopes = sorted(pending, key=lambda scope: -1 if scope is None else scope)
    pending.clear()
    for scope in scopes:
        _raise(alias, scope)


def _raise(alias: str, scope: int | None) -> None:
    """One UPDATE of one row in its own autocommit (made at its first raise)."""
    _writes.set(_writes.get() + 1)
    rows = CacheGeneration.objects.using(alias)
    mine = rows.filter(pk=ROW) if scope is None else rows.filter(connection_id=scope)
    try:
        if mine.update(value=models.F("value") + 1):
            return
        with transaction.atomic(using=alias):
            if scope is None:
                rows.get_or_create(pk=ROW, defaults={"value": 1})
            else:
                rows.create(connection_id=scope, value=1)
    except IntegrityError:
        # Made by another process meanwhile (raise it), or its connection is gone (no page
        # shows it any more: nothing to raise).
        mine.update(value=models.F("value") + 1)
    except (OperationalError, ProgrammingError):
        # No table (or column) yet: a `migrate` to an earlier migration writes roles
        # (post_migrate); no page is served from the cache by a database that old.
        if _table_is_older(alias):
            return
        raise


def _table_is_older(alias: str) -> bool:
    with connections[alias].cursor() as cursor:
        tables = connections[alias].introspection.table_names(cursor)
        if CacheGeneration._meta.db_table not in tables:
            return True
        columns = connections[alias].introspection.get_table_description(
            cursor, CacheGeneration._meta.db_table
        )
    return "connection_id" not in {column.name for column in columns}


def advance_past(value: int, using: str | None = None) -> None:
    """Make everyone's number larger than `value` and than it is now: after a restore brought
    back an older one, pages cached since under the numbers in between are never served
    (everyone's number is part of every key). (Nothing to do when the restored database
    predates the table: `migrate` makes it.)"""
    alias = using or router.db_for_write(CacheGeneration)
    try:
        now = CacheGeneration.objects.using(alias).filter(pk=ROW).values_list("value", flat=True)
        higher = max([value, *now]) + 1
        CacheGeneration.objects.using(alias).update_or_create(pk=ROW, defaults={"value": higher})
    except DatabaseError:
        pass


def read_or_zero(using: str | None = None) -> int:
    """Everyone's number, or 0 when the table does not exist (yet)."""
    alias = using or router.db_for_write(CacheGeneration)
    try:
        with transaction.atomic(using=alias):
            found = (
                CacheGeneration.objects.using(alias).filter(pk=ROW).values_list("value", flat=True)
            )
            return max(found, default=0)
    except DatabaseError:
        return 0


def scope_of(instance: models.Model) -> int | None:
    """Whose number a row is part of: the connection it names, directly or through its batch;
    EVERYONE for a row of no connection (a person, a group, a connection itself, a price)."""
    if type(instance)._meta.label_lower == "batches.connection":
        return EVERYONE
    connection_id = getattr(instance, "connection_id", None)
    if connection_id is not None:
        return connection_id
    batch_id = getattr(instance, "batch_id", None)
    if batch_id is None:
        return EVERYONE
    batch = instance._state.fields_cache.get("batch")
    if batch is not None:
        return batch.connection_id
    from ..models.batches import Batch

    found = Batch.objects.filter(pk=batch_id).values_list("connection_id", flat=True).first()
    return found if found is not None else EVERYONE


def scope_path(model: type[models.Model]) -> str | None:
    """The same for a query set of MODEL: the lookup that gives each row's connection."""
    if model._meta.label_lower == "batches.connection":
        return None
    names = {f.name for f in model._meta.get_fields()}
    if "connection" in names or "connection_id" in names:  # a key, or a plain column (tallies)
        return "connection_id"
    if "batch" in names:
        return "batch__connection_id"
    return None


# The models whose rows pages show, each with a predicate saying which of its rows (None: all).
# Filled by `watch_writes`, which connects a receiver for each; see the module's docstring.
SHOWN: dict[type[models.Model], Callable[[Any], bool] | None] = {}


def shown(instance: models.Model) -> bool:
    """Whether a page shows this row, by the rule above (its fields aside)."""
    model = type(instance)
    if model not in SHOWN:
        return False
    predicate = SHOWN[model]
    return predicate is None or predicate(instance)


def _event_shown(event: Any) -> bool:
    """An audit entry is on a cached page only as part of its batch's page."""
    return event.batch_id is not None


def _written(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    unseen = getattr(sender._default_manager.get_queryset(), "unseen_fields", frozenset())
    if update_fields is not None and set(update_fields) <= unseen:
        return
    if not shown(instance):
        return
    bump(using, scope_of(instance))


def _m2m_written(sender: Any, action: str, using: str, **kwargs: Any) -> None:
    # People's groups and permissions, connections' groups: who may see what, everyone's.
    if action in ("post_add", "post_remove", "post_clear"):
        bump(using, EVERYONE)


def watch_writes() -> None:
    """Declare what pages show (`SHOWN`) and connect the receivers (from BatchesConfig.ready).
    Each names its sender: a receiver for every model would make Django fetch each row of a
    bulk delete (results rows, sessions) to send it a signal."""
    from django.contrib.auth.models import Group, Permission, User
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from ..models.audit import Event
    from ..models.batches import Batch, BatchTally, ResultFile
    from ..models.capacity import CapacityLimit, CapacityWait
    from ..models.connections import Connection
    from ..models.costs import PriceOverride
    from ..models.notifications import Watch

    SHOWN.update(
        {
            Batch: None,
            BatchTally: None,
            Event: _event_shown,
            ResultFile: None,
            CapacityLimit: None,
            CapacityWait: None,
            Connection: None,
            PriceOverride: None,
            Watch: None,
            User: None,
            Group: None,
            Permission: None,
        }
    )
    for model in SHOWN:
        uid = f"bw-generation-{model._meta.label_lower}"
        post_save.connect(_written, sender=model, dispatch_uid=uid + "-save")
        post_delete.connect(_written, sender=model, dispatch_uid=uid + "-delete")
    for through in (
        Connection.groups.through,
        User.groups.through,
        User.user_permissions.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(
            _m2m_written, sender=through, dispatch_uid=f"bw-generation-m2m-{through._meta.label}"
        )


def migrated(*, using: str = "default", **kwargs: Any) -> None:
    """After `migrate` (post_migrate): a data migration may have changed what pages show
    without sending signals, so every page is drawn again."""
    bump(using, EVERYONE)
