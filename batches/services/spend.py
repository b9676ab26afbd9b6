"""What the team spent, and on what: spend and tokens over time and by model, person, label
and connection, for the spend page and its CSV files. Plain functions, no HTTP.

Every figure is summed by the database. Pages read `SpendRollup` rows (per connection, per day
and per month) that the worker keeps with `spend_rollup()`, so a year of 100,000 batches is a
few thousand rows. Days the roll-ups do not cover as the cache is now (a batch saved since, see
`Batch.spend_rolled`, or a batch deleted) are summed from the batches themselves: the page is
never behind the cache, whatever the worker has done.

Batches count on the UTC day they were created. Costs are the stored estimates of
services/costs.py; a finished batch without one counts as "cost unknown", never as $0.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from ..models import Batch, Connection, SpendRollup
from .costs import ABSURD_TOKENS

DAY = dt.timedelta(days=1)
Dimension = SpendRollup.Dimension
Period = SpendRollup.Period

# Where each dimension's key comes from on a batch.
BATCH_FIELD = {
    Dimension.MODEL: "model",
    Dimension.PERSON: "created_by_id",
    Dimension.LABEL: "label",
}
FIGURES = (
    "batches",
    "priced",
    "unpriced",
    "cost_usd",
    "list_cost_usd",
    "listed_cost_usd",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
)
GRAINS = ("day", "week", "month")
SUM = "sum_"  # aggregates are named apart from the fields they sum


# --- Figures --------------------------------------------------------------------------------------


@dataclass
class Figures:
    """Sums over some batches. `cost_usd` is over the `priced` ones only; `unpriced` finished
    batches have no cost anyone can trust, and are counted, not guessed."""

    batches: int = 0
    priced: int = 0
    unpriced: int = 0
    cost_usd: Decimal = Decimal(0)
    list_cost_usd: Decimal = Decimal(0)
    listed_cost_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def add(self, row: dict[str, Any]) -> None:
        for name in FIGURES:
            value = row.get(SUM + name)
            if value is None:
                continue
            if isinstance(getattr(self, name), Decimal):
                value = Decimal(str(value))
            setattr(self, name, getattr(self, name) + value)

    @property
    def saved_usd(self) -> Decimal:
        """What the priced batches with a list price would have cost at list price, less
        what they cost."""
        return self.list_cost_usd - self.listed_cost_usd

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _plausible(name: str) -> Q:
    return Q(**{f"{name}__gte": 0, f"{name}__lte": ABSURD_TOKENS})


def _batch_sums() -> dict[str, Any]:
    """The figures of some batches, as database aggregates. Token counts that cannot be true
    (negative, or more than services.costs believes of a whole batch) are left out."""
    sums = {
        "batches": Count("id"),
        "priced": Count("id", filter=Q(cost_usd__isnull=False)),
        "unpriced": Count("id", filter=Q(running=False, cost_usd__isnull=True)),
        "cost_usd": Sum("cost_usd"),
        "list_cost_usd": Sum("list_cost_usd", filter=Q(cost_usd__isnull=False)),
        "listed_cost_usd": Sum("cost_usd", filter=Q(list_cost_usd__isnull=False)),
        "input_tokens": Sum("input_tokens", filter=_plausible("input_tokens")),
        "cached_tokens": Sum("cached_tokens", filter=_plausible("cached_tokens")),
        "output_tokens": Sum("output_tokens", filter=_plausible("output_tokens")),
    }
    return {SUM + name: value for name, value in sums.items()}


def _rollup_sums() -> dict[str, Any]:
    return {SUM + name: Sum(name) for name in FIGURES}


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


# --- Keeping the roll-ups ---------------------------------------------------------------------


def spend_due(
    *, connection: Connection | None = None, limit: int = 400
) -> list[tuple[int, dt.date]]:
    """The (connection id, day) pairs whose roll-ups do not match the batches: a batch saved
    since the day was rolled up, or one deleted. Oldest first."""
    waiting = Batch.objects.filter(spend_rolled=False)
    stale = SpendRollup.objects.filter(stale=True, period=Period.DAY)
    if connection is not None:
        waiting = waiting.filter(connection=connection)
        stale = stale.filter(connection=connection)
    pairs = set(
        waiting.order_by()
        .annotate(day=TruncDate("created_at"))
        .values_list("connection_id", "day")
        .distinct()
    )
    pairs |= set(stale.order_by().values_list("connection_id", "start").distinct())
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]))[:limit]


def spend_rollup(
    *, connection: Connection | None = None, limit: int = 400, seconds: float | None = None
) -> int:
    """Roll up the days that are due (and their months); for the worker. Returns how many
    days were rolled up; stops after `seconds` if given (a first sync of a year of history is
    thousands of days: the chore takes them a few seconds at a time). Safe beside another
    process doing the same: one of them wins a day, the other leaves it for the next pass."""
    deadline = None if seconds is None else time.monotonic() + seconds
    months: dict[tuple[int, dt.date], list[dt.date]] = defaultdict(list)
    for connection_id, day in spend_due(connection=connection, limit=limit):
        months[(connection_id, _month_start(day))].append(day)
    done = 0
    for (connection_id, month), days in months.items():
        if deadline is not None and time.monotonic() > deadline:
            break
        try:
            with transaction.atomic():
                for day in days:
                    _roll_day(connection_id, day)
                _roll_month(connection_id, month)
        except IntegrityError:
            continue  # another process rolled them up meanwhile; its rows stand
        done += len(days)
    return done


def _roll_day(connection_id: int, day: dt.date) -> None:
    start = _midnight(day)
    mine = Batch.objects.filter(
        connection_id=connection_id, created_at__gte=start, created_at__lt=start + DAY
    ).order_by()
    # Marked first: a batch saved after this, even while this runs, is marked again and
    # counted from the batches until the next roll-up.
    mine.filter(spend_rolled=False).update(spend_rolled=True)
    rows = []
    total = mine.aggregate(**_batch_sums())
    if total[SUM + "batches"]:
        rows.append(_row(connection_id, Period.DAY, day, Dimension.TOTAL, "", total))
        for dimension, name in BATCH_FIELD.items():
            for found in mine.values(name).annotate(**_batch_sums()):
                key = "" if found[name] is None else str(found[name])
                rows.append(_row(connection_id, Period.DAY, day, dimension, key, found))
    SpendRollup.objects.filter(connection_id=connection_id, period=Period.DAY, start=day).delete()
    SpendRollup.objects.bulk_create(rows)


def _roll_month(connection_id: int, month: dt.date) -> None:
    days = SpendRollup.objects.filter(
        connection_id=connection_id,
        period=Period.DAY,
        start__gte=month,
        start__lt=_next_month(month),
    ).order_by()
    rows = [
        _row(connection_id, Period.MONTH, month, found["dimension"], found["key"], found)
        for found in days.values("dimension", "key").annotate(**_rollup_sums())
    ]
    SpendRollup.objects.filter(
        connection_id=connection_id, period=Period.MONTH, start=month
    ).delete()
    SpendRollup.objects.bulk_create(rows)


def _row(
    connection_id: int, period: str, start: dt.date, dimension: str, key: str, sums: dict
) -> SpendRollup:
    return SpendRollup(
        connection_id=connection_id,
        period=period,
        start=start,
        dimension=dimension,
        key=key[:512],
        **{name: sums.get(SUM + name) or 0 for name in FIGURES},
    )


def spend_mark_deleted(*, batch: Batch) -> None:
    """A batch was deleted: its day and month are counted from the batches until rolled up
    again (a receiver of post_delete, see apps.py)."""
    if batch.connection_id is None or batch.created_at is None:
        return
    day = batch.created_at.astimezone(dt.UTC).date()
    SpendRollup.objects.filter(
        Q(period=Period.DAY, start=day) | Q(period=Period.MONTH, start=_month_start(day)),
        connection_id=batch.connection_id,
    ).update(stale=True)


def batch_deleted(sender: Any, instance: Batch, **kwargs: Any) -> None:
    spend_mark_deleted(batch=instance)


# --- Reading them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendQuery:
    """Batches created from `start` to `end` (both included, UTC days) on these connections,
    over time by `grain`."""

    start: dt.date
    end: dt.date
    grain: str
    connection_ids: tuple[int, ...]
    today: dt.date


@dataclass
class Share:
    """One row of a breakdown: a model, a person, a label or a connection."""

    key: str
    name: str
    figures: Figures
    # What the batch list filters by to show these batches (model, user name, connection).
    value: str = ""


@dataclass
class SpendReport:
    query: SpendQuery
    over_time: list[tuple[dt.date, dt.date, Figures]]
    total: Figures
    by: dict[str, list[Share]] = field(default_factory=dict)
    # Days counted from the batches themselves, the roll-ups being behind.
    fresh_days: int = 0


def spend_report(*, query: SpendQuery) -> SpendReport:
    """Every figure of the spend page, summed by the database."""
    dirty = _dirty_days(query)
    over_time = _over_time(query, dirty)
    total = Figures()
    for _, _, figures in over_time:
        for name in FIGURES:
            setattr(total, name, getattr(total, name) + getattr(figures, name))
    by = {
        "model": _named(_shares(query, dirty, Dimension.MODEL), "model not reported"),
        "person": _person_names(_shares(query, dirty, Dimension.PERSON)),
        "label": _named(_shares(query, dirty, Dimension.LABEL), "no label"),
        "connection": _connection_names(_shares(query, dirty, None)),
    }
    return SpendReport(query=query, over_time=over_time, total=total, by=by, fresh_days=len(dirty))


def _dirty_days(query: SpendQuery) -> set[dt.date]:
    """Days in range whose roll-ups are behind the batches. On every connection, not only
    those asked for: the partial indexes answer that at once, and a day counted from the
    batches when it need not be is only slower, never wrong."""
    start, end = _midnight(query.start), _midnight(query.end) + DAY
    waiting = (
        Batch.objects.filter(spend_rolled=False, created_at__gte=start, created_at__lt=end)
        .order_by()
        .values_list("created_at", flat=True)
    )
    days = {when.astimezone(dt.UTC).date() for when in waiting.iterator(chunk_size=2000)}
    stale = SpendRollup.objects.filter(
        stale=True, start__gte=query.start, start__lte=query.end
    ).order_by()
    return days | set(stale.values_list("start", flat=True).distinct())


def _day_ranges(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days as (first, last) runs, to keep the queries short."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in sorted(days):
        if runs and runs[-1][1] + DAY == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _live_batches(query: SpendQuery, dirty: set[dt.date]) -> QuerySet[Batch] | None:
    """The batches of the days the roll-ups do not cover."""
    if not dirty:
        return None
    when = Q()
    for first, last in _day_ranges(dirty):
        when |= Q(created_at__gte=_midnight(first), created_at__lt=_midnight(last) + DAY)
    return Batch.objects.filter(when, connection_id__in=query.connection_ids).order_by()


def _bucket_start(day: dt.date, grain: str) -> dt.date:
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    if grain == "month":
        return _month_start(day)
    return day


def _bucket_next(start: dt.date, grain: str) -> dt.date:
    if grain == "week":
        return start + dt.timedelta(days=7)
    if grain == "month":
        return _next_month(start)
    return start + DAY


def _over_time(query: SpendQuery, dirty: set[dt.date]) -> list[tuple[dt.date, dt.date, Figures]]:
    """(first day, last day, figures) of every bucket in range, empty ones included. The
    database sums per day (or per month, for months the range holds whole); those few hundred
    rows at most are then put in their week or month."""
    grain = query.grain
    buckets: dict[dt.date, Figures] = {}
    start = _bucket_start(query.start, grain)
    while start <= query.end:
        buckets[start] = Figures()
        start = _bucket_next(start, grain)

    if grain == "month":
        covered = _rolled_rows(query, dirty)
    else:
        covered = Q(period=Period.DAY, start__gte=query.start, start__lte=query.end)
        if dirty:
            covered &= ~Q(start__in=dirty)
    rolled = SpendRollup.objects.filter(
        covered, dimension=Dimension.TOTAL, connection_id__in=query.connection_ids
    ).order_by()
    for row in rolled.values("start").annotate(**_rollup_sums()):
        buckets[_bucket_start(_as_date(row["start"]), grain)].add(row)

    live = _live_batches(query, dirty)
    if live is not None:
        live = live.annotate(day=TruncDate("created_at"))
        for row in live.values("day").annotate(**_batch_sums()):
            buckets[_bucket_start(_as_date(row["day"]), grain)].add(row)

    rows = []
    for start, figures in buckets.items():
        first = max(start, query.start)
        last = min(_bucket_next(start, grain) - DAY, query.end)
        rows.append((first, last, figures))
    return rows


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str):  # SQLite may hand back text for a truncated date
        return dt.date.fromisoformat(value[:10])
    return value


def _rolled_rows(query: SpendQuery, dirty: set[dt.date]) -> Q:
    """Which roll-up rows cover the range, outside the dirty days: whole months where the
    range holds the whole month (or all of it so far), days elsewhere."""
    whole_months: list[dt.date] = []
    day_runs: list[tuple[dt.date, dt.date]] = []
    month = _month_start(query.start)
    while month <= query.end:
        first = max(month, query.start)
        last = min(_next_month(month) - DAY, query.end)
        covers = first == month and (last == _next_month(month) - DAY or last >= query.today)
        if covers and not any(month <= day < _next_month(month) for day in dirty):
            whole_months.append(month)
        else:
            day_runs.append((first, last))
        month = _next_month(month)
    rows = Q(period=Period.MONTH, start__in=whole_months) if whole_months else Q(pk__in=[])
    for first, last in day_runs:
        days = Q(period=Period.DAY, start__gte=first, start__lte=last)
        if dirty:
            days &= ~Q(start__in=[d for d in dirty if first <= d <= last])
        rows |= days
    return rows


def _shares(query: SpendQuery, dirty: set[dt.date], dimension: str | None) -> list[Share]:
    """The range's figures by one dimension (None: by connection), most spent first."""
    found: dict[str, Figures] = defaultdict(Figures)
    rolled = SpendRollup.objects.filter(
        _rolled_rows(query, dirty),
        dimension=dimension or Dimension.TOTAL,
        connection_id__in=query.connection_ids,
    ).order_by()
    key = "key" if dimension else "connection_id"
    for row in rolled.values(key).annotate(**_rollup_sums()):
        found[str(row[key])].add(row)
    live = _live_batches(query, dirty)
    if live is not None:
        name = BATCH_FIELD[dimension] if dimension else "connection_id"
        for row in live.values(name).annotate(**_batch_sums()):
            found["" if row[name] is None else str(row[name])[:512]].add(row)
    shares = [Share(key=k, name=k, figures=f) for k, f in found.items() if f.batches]
    shares.sort(key=lambda s: (-s.figures.cost_usd, -s.figures.batches, s.key))
    return shares


def _named(shares: list[Share], nameless: str) -> list[Share]:
    for share in shares:
        share.name = share.key or nameless
        share.value = share.key
    return shares


def _person_names(shares: list[Share]) -> list[Share]:
    ids = [int(s.key) for s in shares if s.key.isdigit()]
    users = {str(u.pk): u for u in get_user_model().objects.filter(pk__in=ids)}
    for share in shares:
        user = users.get(share.key)
        if user is not None:
            share.name = user.get_full_name() or user.get_username()
            share.value = user.get_username()
        else:
            share.name = "made outside batchweb" if not share.key else "a removed account"
    return shares


def _connection_names(shares: list[Share]) -> list[Share]:
    connections = {str(c.pk): c for c in Connection.objects.filter(pk__in=[s.key for s in shares])}
    for share in shares:
        connection = connections.get(share.key)
        share.name = connection.name if connection else "a removed connection"
        share.value = connection.slug if connection else ""
    return shares


# --- CSV ----------------------------------------------------------------------------------------

CSV_HEADER = [
    "batches",
    "priced_batches",
    "cost_unknown_batches",
    "cost_usd",
    "list_price_usd",
    "saved_usd",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
]


def _csv_figures(figures: Figures) -> list[Any]:
    return [
        figures.batches,
        figures.priced,
        figures.unpriced,
        f"{figures.cost_usd:.6f}",
        f"{figures.list_cost_usd:.6f}",
        f"{figures.saved_usd:.6f}",
        figures.input_tokens,
        figures.cached_tokens,
        figures.output_tokens,
    ]


def spend_csv(*, report: SpendReport, table: str) -> Iterator[list[Any]]:
    """The rows of one of the page's tables: "time", "model", "person", "label" or
    "connection" (keys as they are; the view makes them safe for spreadsheets)."""
    if table == "time":
        yield ["from", "to", *CSV_HEADER]
        for first, last, figures in report.over_time:
            yield [first.isoformat(), last.isoformat(), *_csv_figures(figures)]
        return
    yield [table, *CSV_HEADER]
    for share in report.by[table]:
        yield [share.name, *_csv_figures(share.figures)]
