"""The cache generation: one number that grows with every committed write that changes what a
cached page shows. Cached pages are kept under the generation they were drawn at
(batches/views/page_cache.py), so a write makes every older copy unreachable at once: nothing
is invalidated one key at a time, and no process has to be told (djangoproject.com's
dashboard keeps its cache this way).

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

The number is raised once per transaction, after it commits: raised earlier, a page drawn
by another process before the commit would be kept under the new number with the old data.
The write is a one-row UPDATE in its own autocommit, so two transactions never wait on it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, ClassVar

from django.db import (
    DatabaseError,
    OperationalError,
    ProgrammingError,
    connections,
    models,
    router,
    transaction,
)

ROW = 1


class CacheGeneration(models.Model):
    """The one row (id 1) that holds the number."""

    value = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "cache generation"

    def __str__(self) -> str:
        return f"generation {self.value}"


def current() -> int:
    """The number now (0 before the first write): one read of one row by its key, in SQL of
    its own (the ORM's compiling cost more than the query on a page served from the cache)."""
    alias = router.db_for_read(CacheGeneration)
    table = connections[alias].ops.quote_name(CacheGeneration._meta.db_table)
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT value FROM {table} WHERE id = %s", [ROW])  # noqa: S608
        found = cursor.fetchone()
    return found[0] if found else 0


def as_first_read(holder: Any) -> int:
    """`current()`, kept on `holder` (the request's user) and read again only when this thread
    has written since (a request that refreshes a batch, then draws its page)."""
    writes = _writes.get()
    if getattr(holder, "_bw_generation_writes", None) != writes:
        holder._bw_generation = current()
        holder._bw_generation_writes = writes
    return holder._bw_generation


def keep(holder: Any, value: int) -> None:
    """Have `as_first_read(holder)` answer `value`, just read by the caller."""
    holder._bw_generation = value
    holder._bw_generation_writes = _writes.get()


# Writes this thread has made (and commits it has seen) that raise the number: a number read
# before one of them is read again.
_writes: contextvars.ContextVar[int] = contextvars.ContextVar("bw_generation_writes", default=0)


def bump(using: str | None = None) -> None:
    """Raise the number once the current transaction commits (at once outside one); several
    writes in one transaction raise it once."""
    _writes.set(_writes.get() + 1)
    alias = using or router.db_for_write(CacheGeneration)
    connection = connections[alias]
    # Already due at this commit: the callback is in Django's list for the transaction.
    if connection.in_atomic_block and any(
        func is _raise for _sids, func, *_ in connection.run_on_commit
    ):
        return
    _on_commit(_raise, using=alias)


# Django's TestCase never commits, so the tests' conftest runs the callback at once instead.
_on_commit = transaction.on_commit


def _raise() -> None:
    _writes.set(_writes.get() + 1)
    try:
        with transaction.atomic():
            if not CacheGeneration.objects.filter(pk=ROW).update(value=models.F("value") + 1):
                CacheGeneration.objects.get_or_create(pk=ROW, defaults={"value": 1})
    except (OperationalError, ProgrammingError):
        # No table yet: a `migrate` to an earlier migration writes roles (post_migrate); no
        # page is served from the cache by a database that old.
        tables = connections[router.db_for_write(CacheGeneration)].introspection.table_names()
        if CacheGeneration._meta.db_table not in tables:
            return
        raise


def advance_past(value: int, using: str | None = None) -> None:
    """Make the number larger than `value` and than it is now: after a restore brought back
    an older one, pages cached since under the numbers in between are never served. (Nothing
    to do when the restored database predates the table: `migrate` makes it.)"""
    alias = using or router.db_for_write(CacheGeneration)
    try:
        now = CacheGeneration.objects.using(alias).filter(pk=ROW).values_list("value", flat=True)
        higher = max([value, *now]) + 1
        CacheGeneration.objects.using(alias).update_or_create(pk=ROW, defaults={"value": higher})
    except DatabaseError:
        pass


def read_or_zero(using: str | None = None) -> int:
    """`current()`, or 0 when the table does not exist (yet)."""
    alias = using or router.db_for_write(CacheGeneration)
    try:
        with transaction.atomic(using=alias):
            found = (
                CacheGeneration.objects.using(alias).filter(pk=ROW).values_list("value", flat=True)
            )
            return max(found, default=0)
    except DatabaseError:
        return 0


class GenerationQuerySet(models.QuerySet):
    """Bulk writes of a model the pages show raise the generation (they send no signals).
    `unseen_fields` are bookkeeping no page shows (a lease, a roll-up flag): an update of
    those alone changes nothing on a page."""

    unseen_fields: ClassVar[frozenset[str]] = frozenset()

    def update(self, **kwargs: Any) -> int:
        changed = super().update(**kwargs)
        if changed and not set(kwargs) <= self.unseen_fields:
            bump(self.db)
        return changed

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list:
        made = super().bulk_create(objs, *args, **kwargs)
        if made:
            bump(self.db)
        return made

    def bulk_update(self, objs: Any, fields: Any, *args: Any, **kwargs: Any) -> int:
        changed = super().bulk_update(objs, fields, *args, **kwargs)
        if changed and not set(fields) <= self.unseen_fields:
            bump(self.db)
        return changed


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
    bump(using)


def _m2m_written(sender: Any, action: str, using: str, **kwargs: Any) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        bump(using)


def watch_writes() -> None:
    """Declare what pages show (`SHOWN`) and connect the receivers (from BatchesConfig.ready).
    Each names its sender: a receiver for every model would make Django fetch each row of a
    bulk delete (results rows, sessions) to send it a signal."""
    from django.contrib.auth.models import Group, Permission, User
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from .audit import Event
    from .batches import Batch, BatchTally, ResultFile
    from .capacity import CapacityLimit, CapacityWait
    from .connections import Connection
    from .costs import PriceOverride
    from .notifications import Watch

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
