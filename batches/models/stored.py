"""Rows read as the database stores them, and made into what the ORM would have made of them.

Building a query and converting its rows is most of what the ORM costs on a busy page: on
SQLite every date is parsed from its text. Where values are only compared or keyed (the list's
row cache), `stored_values` reads them as they are; where a few of them are computed with (a
running row's estimate), `from_stored` converts just those, with the converters the ORM's
compiler applies (`field_converters`, which the API's own reads use too: api/reads.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, models, router


def field_converters(db: Any, field: Any) -> tuple[tuple, Any]:
    """The converters the ORM's compiler applies to `field`'s column (the backend's, then the
    field's), and the column expression they are called with."""
    column = field.get_col(field.model._meta.db_table)
    return tuple(db.ops.get_db_converters(column) + field.get_db_converters(db)), column


def stored_values(rows: models.QuerySet, columns: Sequence[str]) -> list[dict[str, Any]]:
    """`rows.values(*columns)` as the database gives them, without Django's converters: on
    SQLite each date is parsed from its text, which was a third of the list's query (250 dates
    a page). For values that are only compared or keyed (the list's row cache), never shown
    or computed with: a date is text on SQLite and a datetime on PostgreSQL."""
    query = rows.values(*columns).query
    # The order Django's own ValuesIterable names the columns in.
    names = [*query.extra_select, *query.values_select, *query.annotation_select]
    try:
        sql, params = query.sql_with_params()
    except EmptyResultSet:  # rows.none(): a connection the person may not see
        return []
    with connections[rows.db].cursor() as cursor:
        cursor.execute(sql, params)
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def from_stored(
    model: type[models.Model], rows: Sequence[dict[str, Any]], fields: Sequence[str]
) -> list[Any]:
    """Objects of `model` with FIELDS alone, from rows of `stored_values`: each value
    converted as the ORM converts it (worked out once per field, not per row). Any other field
    asked for would be a query of its own."""
    alias = router.db_for_read(model)
    db = connections[alias]
    names, conversions = [], []
    for model_field in model._meta.concrete_fields:
        if model_field.attname in fields:
            names.append(model_field.attname)
            conversions.append(field_converters(db, model_field))
    made = []
    for row in rows:
        values = []
        for name, (functions, column) in zip(names, conversions, strict=True):
            value = row[name]
            for function in functions:
                value = function(value, column, db)
            values.append(value)
        made.append(model.from_db(alias, names, values))
    return made
