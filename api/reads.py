"""The reads every /v1/ call makes: its token and the token's owner, and a list page from the
cache. Each is one statement over an index, written here once per process instead of being
built by the ORM on every request (issue 14). Names are quoted by the database's own rules;
every value is a parameter.

Building a query costs the ORM 0.4-2 ms, several times what the database takes to run it, and a
raw query set still works out each column's converters on every call; a script that pages through
thousands of batches pays that on every call. These statements read the rows the ORM's queries
read and make the same model instances of them (with the converters the ORM applies, worked out
once per model), and the tests hold them to the ORM's answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import Model

from batches.models import Batch
from batches.models.stored import field_converters

from .models import ApiToken


def _db(model: type[Model]) -> Any:
    return connections[router.db_for_read(model)]


def _columns(model: type[Model], alias: str) -> str:
    q = _db(model).ops.quote_name
    return ", ".join(f"{alias}.{q(field.column)}" for field in model._meta.concrete_fields)


@cache
def _converters(model: type[Model], vendor: str) -> tuple[tuple[int, tuple, Any], ...]:
    """For each column of `model` that needs converting: its position, its converters and
    their column expression."""
    db = _db(model)
    found = []
    for position, field in enumerate(model._meta.concrete_fields):
        functions, column = field_converters(db, field)
        if functions:
            found.append((position, functions, column))
    return tuple(found)


def _instance(model: type[Model], row: Sequence[Any]) -> Any:
    """The model instance a query set would make of `row` (every concrete field, in order)."""
    db = _db(model)
    values = list(row)
    for position, functions, column in _converters(model, db.vendor):
        value = values[position]
        for function in functions:
            value = function(value, column, db)
        values[position] = value
    return model.from_db(db.alias, None, values)


def _fetch(model: type[Model], sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with _db(model).cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@cache
def _token_sql() -> str:
    user = get_user_model()
    q = _db(ApiToken).ops.quote_name
    owner = q(ApiToken._meta.get_field("user").column)
    return (
        f"SELECT {_columns(ApiToken, 't')}, {_columns(user, 'u')} "  # noqa: S608
        f"FROM {q(ApiToken._meta.db_table)} t INNER JOIN {q(user._meta.db_table)} u "
        f"ON u.{q(user._meta.pk.column)} = t.{owner} WHERE t.{q('prefix')} = %s"
    )


def token_by_prefix(prefix: str) -> ApiToken | None:
    """The token whose prefix this is (prefixes are unique), with its owner loaded."""
    rows = _fetch(ApiToken, _token_sql(), [prefix])
    if not rows:
        return None
    split = len(ApiToken._meta.concrete_fields)
    token = _instance(ApiToken, rows[0][:split])
    token.user = _instance(get_user_model(), rows[0][split:])
    return token


@cache
def _page_sql(*, after: bool) -> str:
    q = _db(Batch).ops.quote_name
    table = q(Batch._meta.db_table)
    raw, pk, made = q("raw"), q(Batch._meta.pk.column), q("created_at")
    connection = q(Batch._meta.get_field("connection").column)
    newest = f"ORDER BY b.{made} DESC, b.{pk} DESC LIMIT %s"
    if not after:
        return f"SELECT b.{raw} FROM {table} b WHERE b.{connection} = %s {newest}"  # noqa: S608
    # The keyset step after the anchor row, read in the same statement (no anchor, no rows):
    # older, or as old with a smaller id. The `<=` lets the index start at the anchor; without
    # it a deep page would walk every newer batch of the connection first.
    return (
        f"SELECT b.{raw} FROM {table} b INNER JOIN (SELECT {made}, {pk} FROM {table} "  # noqa: S608
        f"WHERE {connection} = %s AND {q('openai_id')} = %s) a ON b.{made} <= a.{made} "
        f"AND (b.{made} < a.{made} OR b.{pk} < a.{pk}) WHERE b.{connection} = %s {newest}"
    )


def cached_payloads(*, connection_id: int, after: str | None, limit: int) -> list[Any]:
    """The stored payloads (`raw`) of up to `limit` of a connection's cached batches, newest
    first (created_at, then id, as the list orders them), after the batch `after` when given."""
    if after:
        sql, params = _page_sql(after=True), [connection_id, after, connection_id, limit]
    else:
        sql, params = _page_sql(after=False), [connection_id, limit]
    db = _db(Batch)
    functions, column = field_converters(db, Batch._meta.get_field("raw"))
    payloads = []
    for (value,) in _fetch(Batch, sql, params):
        for function in functions:  # the JSON text decoded, as the field decodes it
            value = function(value, column, db)
        payloads.append(value)
    return payloads
