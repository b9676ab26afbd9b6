"""The cache generations' rows (batches/cache/generations.py says what raises them) and the
query set that raises them on bulk writes of the models pages show."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models

ROW = 1  # everyone's generation; each connection's is the row that names it


class CacheGeneration(models.Model):
    """One number: everyone's (id 1, no connection: people, groups, connections, prices) or
    one connection's (its batches, their tallies, results, capacity, watches)."""

    value = models.BigIntegerField(default=0)
    connection = models.OneToOneField(
        "batches.Connection",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )

    class Meta:
        verbose_name = "cache generation"

    def __str__(self) -> str:
        return f"generation {self.value}"


class GenerationQuerySet(models.QuerySet):
    """Bulk writes of a model the pages show raise the numbers of the connections they touch
    (they send no signals). `unseen_fields` are bookkeeping no page shows (a lease, a roll-up
    flag): an update of those alone changes nothing on a page."""

    unseen_fields: ClassVar[frozenset[str]] = frozenset()

    def update(self, **kwargs: Any) -> int:
        from ..cache.generations import bump

        if set(kwargs) <= self.unseen_fields:
            return super().update(**kwargs)
        scopes = self._scopes()
        changed = super().update(**kwargs)
        if changed:
            for scope in scopes:
                bump(self.db, scope)
        return changed

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list:
        from ..cache.generations import bump, scope_of

        made = super().bulk_create(objs, *args, **kwargs)
        for scope in {scope_of(obj) for obj in made}:
            bump(self.db, scope)
        return made

    def bulk_update(self, objs: Any, fields: Any, *args: Any, **kwargs: Any) -> int:
        from ..cache.generations import bump, scope_of

        objs = list(objs)
        changed = super().bulk_update(objs, fields, *args, **kwargs)
        if changed and not set(fields) <= self.unseen_fields:
            for scope in {scope_of(obj) for obj in objs}:
                bump(self.db, scope)
        return changed

    def _scopes(self) -> set[int | None]:
        """The connections of the rows about to be written (one small query)."""
        from ..cache.generations import EVERYONE, scope_path

        path = scope_path(self.model)
        if path is None:
            return {EVERYONE}
        found = set(self.order_by().values_list(path, flat=True).distinct())
        return {EVERYONE if scope is None else scope for scope in found}
