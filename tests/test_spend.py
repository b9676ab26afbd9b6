"""The spend figures (services/spend.py) against a fixture computed by hand: from the batches
themselves before the roll-ups exist, from the roll-ups after, and mixed when some days
changed since; and the roll-ups' bookkeeping (what marks a day due, deletions)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from batches.models import Batch, Connection, SpendRollup, default_connection
from batches.services.spend import (
    SpendQuery,
    spend_csv,
    spend_due,
    spend_report,
    spend_rollup,
)

pytestmark = pytest.mark.django_db

TODAY = dt.date(2026, 3, 10)  # a Tuesday
D = Decimal


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def make(connection: Connection, n: int, day: dt.date, **fields) -> Batch:
    values = {
        "status": "completed",
        "running": False,
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "created_at": at(day),
        "synced_at": at(TODAY),
        "input_tokens": 1_000,
        "cached_tokens": 100,
        "output_tokens": 500,
    }
    values.update(fields)
    return Batch.objects.create(connection=connection, openai_id=f"batch_{n}", **values)


@pytest.fixture
def world(db) -> dict:
    """Two connections, two people, three models, over late February and March 2026:

    | batch | conn | day    | model        | who  | label  | cost | list | tokens in/cached/out |
    | 1     | main | Feb 27 | gpt-4o-mini  | ada  | nightly| 1.00 | 2.00 | 1000/100/500         |
    | 2     | main | Mar 2  | gpt-4o-mini  | ada  | nightly| 2.00 | 4.00 | 1000/100/500         |
    | 3     | main | Mar 2  | gpt-4.1      | ben  | ""     | 3.50 | 7.00 | 2000/0/1000          |
    | 4     | main | Mar 9  | embeddings   | ben  | emb    | —    | —    | 4000/0/0 (no price)  |
    | 5     | side | Mar 9  | gpt-4.1      | —    | nightly| 0.25 | —    | 1000/100/500         |
    | 6     | side | Mar 10 | gpt-4.1      | ada  | ""     | running, no usage yet       |
    | 7     | main | Mar 10 | gpt-4o-mini  | ada  | big    | —    | —    | absurd: 10^15 in     |
    """
    main = default_connection()
    side = Connection.objects.create(name="Side", slug="side", base_url="http://127.0.0.1:9/v1")
    ada = User.objects.create_user("ada", first_name="Ada", last_name="L")
    ben = User.objects.create_user("ben")
    feb27, mar2, mar9, mar10 = (
        dt.date(2026, 2, 27),
        dt.date(2026, 3, 2),
        dt.date(2026, 3, 9),
        TODAY,
    )
    make(main, 1, feb27, created_by=ada, label="nightly", cost_usd=D(1), list_cost_usd=D(2))
    make(main, 2, mar2, created_by=ada, label="nightly", cost_usd=D(2), list_cost_usd=D(4))
    make(
        main,
        3,
        mar2,
        created_by=ben,
        model="gpt-4.1",
        cost_usd=D("3.5"),
        list_cost_usd=D(7),
        input_tokens=2000,
        cached_tokens=0,
        output_tokens=1000,
    )
    make(
        main,
        4,
        mar9,
        created_by=ben,
        model="text-embedding-3-small",
        endpoint="/v1/embeddings",
        label="emb",
        input_tokens=4000,
        cached_tokens=0,
        output_tokens=0,
        cost_note="no batch price known",
        cost_computed_at=at(TODAY),
    )
    make(side, 5, mar9, model="gpt-4.1", label="nightly", cost_usd=D("0.25"))
    make(
        side,
        6,
        mar10,
        created_by=ada,
        model="gpt-4.1",
        status="in_progress",
        running=True,
        input_tokens=None,
        cached_tokens=None,
        output_tokens=None,
    )
    make(
        main,
        7,
        mar10,
        created_by=ada,
        label="big",
        input_tokens=10**15,
        cached_tokens=0,
        output_tokens=10**15,
    )
    return {"main": main, "side": side, "ada": ada, "ben": ben}


def query(world, *, start=dt.date(2026, 2, 1), end=TODAY, grain="day", only=None) -> SpendQuery:
    ids = tuple(c.pk for c in (only or [world["main"], world["side"]]))
    return SpendQuery(start=start, end=end, grain=grain, connection_ids=ids, today=TODAY)


def shares(report, table) -> dict[str, tuple]:
    return {
        s.name: (s.figures.batches, s.figures.cost_usd, s.figures.unpriced)
        for s in report.by[table]
    }


def check_march(report) -> None:
    """The figures of 1 to 10 March, computed by hand from the table above."""
    total = report.total
    assert total.batches == 6
    assert total.priced == 3  # batches 2, 3 and 5
    assert total.unpriced == 2  # 4 (no batch price) and 7 (absurd usage): counted, not guessed
    assert total.cost_usd == D("5.75")
    assert total.list_cost_usd == D(11)  # 2 and 3 have list prices: 4 + 7
    assert total.listed_cost_usd == D("5.5")
    assert total.saved_usd == D("5.5")
    # Tokens: batches 2, 3, 4 and 5; the absurd 10^15 of batch 7 is left out.
    assert total.input_tokens == 1000 + 2000 + 4000 + 1000
    assert total.cached_tokens == 100 + 0 + 0 + 100
    assert total.output_tokens == 500 + 1000 + 0 + 500
    assert shares(report, "model") == {
        "gpt-4.1": (3, D("3.75"), 0),
        "gpt-4o-mini": (2, D(2), 1),
        "text-embedding-3-small": (1, D(0), 1),
    }
    assert shares(report, "person") == {
        "ben": (2, D("3.5"), 1),
        "Ada L": (3, D(2), 1),
        "made outside batchweb": (1, D("0.25"), 0),
    }
    assert shares(report, "label") == {
        "no label": (2, D("3.5"), 0),
        "nightly": (2, D("2.25"), 0),
        "big": (1, D(0), 1),
        "emb": (1, D(0), 1),
    }
    assert shares(report, "connection") == {
        default_connection().name: (4, D("5.5"), 2),
        "Side": (2, D("0.25"), 0),
    }


def march(world, grain="day"):
    return query(world, start=dt.date(2026, 3, 1), grain=grain)


def test_figures_from_the_batches_before_any_roll_up(world):
    report = spend_report(query=march(world))
    assert report.fresh_days == 3  # 2, 9 and 10 March (27 February is out of range)
    check_march(report)


def test_the_same_figures_from_the_roll_ups(world):
    assert spend_rollup() == 6  # main: 27 Feb, 2, 9 and 10 Mar; side: 9 and 10 Mar
    assert not spend_due()
    report = spend_report(query=march(world))
    assert report.fresh_days == 0
    check_march(report)


def test_the_same_figures_when_some_days_changed_since(world):
    spend_rollup()
    # Batch 3 gets a new label; batch 5's cost is recomputed: their days are due again.
    batch = Batch.objects.get(openai_id="batch_3")
    batch.label = "renamed"
    batch.save()
    Batch.objects.filter(openai_id="batch_5").update(cost_usd=D("0.75"))
    assert {day for _, day in spend_due()} == {dt.date(2026, 3, 2), dt.date(2026, 3, 9)}
    report = spend_report(query=march(world))
    assert report.fresh_days == 2
    assert report.total.cost_usd == D("6.25")
    assert shares(report, "label")["renamed"] == (1, D("3.5"), 0)
    assert shares(report, "label")["no label"] == (1, D(0), 0)  # batch 6, still running
    spend_rollup()
    again = spend_report(query=march(world))
    assert again.fresh_days == 0
    assert again.total == report.total
    assert shares(again, "label") == shares(report, "label")


def test_updates_that_do_not_change_spend_leave_the_roll_ups_alone(world):
    spend_rollup()
    Batch.objects.filter(openai_id="batch_3").update(last_error="timed out", next_refresh_at=None)
    Batch.objects.get(openai_id="batch_2").save(update_fields=["last_error"])
    assert spend_due() == []


def test_a_deleted_batch_leaves_the_figures(world):
    spend_rollup()
    Batch.objects.get(openai_id="batch_3").delete()
    assert SpendRollup.objects.filter(stale=True).exists()
    report = spend_report(query=march(world))
    assert report.total.cost_usd == D("2.25")
    assert "gpt-4.1" in shares(report, "model")
    assert shares(report, "model")["gpt-4.1"] == (2, D("0.25"), 0)
    spend_rollup()
    assert not SpendRollup.objects.filter(stale=True).exists()
    assert spend_report(query=march(world)).total.cost_usd == D("2.25")


@pytest.mark.parametrize("rolled", [False, True])
def test_over_time_by_day_week_and_month(world, rolled):
    if rolled:
        spend_rollup()
    by_day = spend_report(query=march(world, "day")).over_time
    assert len(by_day) == 10  # every day, empty ones included
    costs = {first: f.cost_usd for first, last, f in by_day}
    assert costs[dt.date(2026, 3, 2)] == D("5.5")
    assert costs[dt.date(2026, 3, 9)] == D("0.25")
    assert costs[dt.date(2026, 3, 5)] == 0

    weeks = spend_report(query=query(world, start=dt.date(2026, 2, 25), grain="week")).over_time
    # Weeks start on Monday; the first and last are cut to the range.
    assert [(first, last) for first, last, _ in weeks] == [
        (dt.date(2026, 2, 25), dt.date(2026, 3, 1)),
        (dt.date(2026, 3, 2), dt.date(2026, 3, 8)),
        (dt.date(2026, 3, 9), dt.date(2026, 3, 10)),
    ]
    assert [f.cost_usd for *_, f in weeks] == [D(1), D("5.5"), D("0.25")]
    assert [f.batches for *_, f in weeks] == [1, 2, 4]

    months = spend_report(query=query(world, grain="month")).over_time
    assert [(first, f.cost_usd, f.batches) for first, _, f in months] == [
        (dt.date(2026, 2, 1), D(1), 1),
        (dt.date(2026, 3, 1), D("5.75"), 6),
    ]


@pytest.mark.parametrize(
    "start,end,cost",
    [
        (dt.date(2026, 2, 1), TODAY, D("6.75")),  # whole February and March so far: months
        (dt.date(2026, 2, 28), TODAY, D("5.75")),  # a partial month: its days
        (dt.date(2026, 3, 2), dt.date(2026, 3, 2), D("5.5")),  # one day
        (dt.date(2026, 3, 3), dt.date(2026, 3, 8), D(0)),  # nothing in range
    ],
)
def test_breakdowns_whatever_the_range(world, start, end, cost):
    spend_rollup()
    rolled = spend_report(query=query(world, start=start, end=end))
    Batch.objects.update(spend_rolled=False)  # the same range counted from the batches
    live = spend_report(query=query(world, start=start, end=end))
    for report in (rolled, live):
        assert report.total.cost_usd == cost
        for table in ("model", "person", "label", "connection"):
            assert sum(s.figures.cost_usd for s in report.by[table]) == cost
            assert sum(s.figures.batches for s in report.by[table]) == report.total.batches
    for table in ("model", "person", "label", "connection"):
        assert shares(rolled, table) == shares(live, table)


def test_only_the_connections_asked_for(world):
    spend_rollup()
    report = spend_report(query=query(world, only=[world["side"]]))
    assert report.total.batches == 2
    assert report.total.cost_usd == D("0.25")
    assert [s.name for s in report.by["connection"]] == ["Side"]


def test_csv_of_each_table(world):
    report = spend_report(query=march(world))
    rows = list(spend_csv(report=report, table="model"))
    assert rows[0][:5] == ["model", "batches", "priced_batches", "cost_unknown_batches", "cost_usd"]
    assert rows[1] == ["gpt-4.1", 3, 2, 0, "3.750000", "7.000000", "3.500000", 3000, 100, 1500]
    time_rows = list(spend_csv(report=report, table="time"))
    assert time_rows[0][:2] == ["from", "to"]
    assert len(time_rows) == 11
    assert sum(D(r[5]) for r in time_rows[1:]) == D("5.75")
