"""The spend page and its CSV files: who may see them, whose batches they count, what a wrong
range says, that charts and tables carry the same numbers, and that a page view only reads."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches import charts
from batches.models import Batch, Connection, default_connection
from batches.services.spend import spend_rollup

pytestmark = pytest.mark.django_db


def make(connection, n, *, days_ago=1, cost="1.50", label="", model="gpt-4o-mini", **fields):
    now = timezone.now()
    return Batch.objects.create(
        connection=connection,
        openai_id=f"batch_{connection.slug}_{n}",
        status="completed",
        running=False,
        endpoint="/v1/chat/completions",
        model=model,
        created_at=now - dt.timedelta(days=days_ago),
        synced_at=now,
        cost_usd=Decimal(cost) if cost is not None else None,
        list_cost_usd=Decimal(cost) * 2 if cost is not None else None,
        input_tokens=1000,
        output_tokens=200,
        label=label,
        **fields,
    )


@pytest.fixture
def research(db) -> Connection:
    connection = Connection.objects.create(
        name="Research", slug="research", base_url="http://127.0.0.1:9/v1"
    )
    connection.groups.add(Group.objects.create(name="Research"))
    return connection


def test_signed_out_visitors_go_to_sign_in(client):
    response = client.get("/spend/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert client.get("/spend/export.csv").status_code == 302


def test_a_person_without_a_role_is_refused(client, db):
    client.force_login(User.objects.create_user("nobody"))
    assert client.get("/spend/").status_code == 403


def test_viewers_see_the_page_with_totals_charts_and_tables(viewer_client):
    make(default_connection(), 1, label="nightly")
    make(default_connection(), 2, days_ago=3, cost="2.25", model="gpt-4.1")
    response = viewer_client.get("/spend/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "$3.75" in page  # spent
    assert "<svg" in page and 'role="img"' in page
    # Every chart is named and described, and says where its numbers are in words.
    for chart in re.findall(r"<svg.*?</svg>", page, re.S):
        assert re.search(r"<title id=\"[\w-]+-title\">[^<]+</title>", chart)
        assert "<desc" in chart
    assert 'data-table="time"' in page and 'data-table="model"' in page
    assert "style=" not in page.split("<main", 1)[1]  # no inline style (CSP)
    assert "<script>" not in page


def test_the_charts_numbers_are_the_tables_numbers(viewer_client):
    for n in range(6):
        make(default_connection(), n, days_ago=n, cost=f"{n + 1}.25", model=f"m{n % 3}")
    page = viewer_client.get("/spend/?range=7d&by=day").content.decode()
    spend_chart = re.search(r'<svg[^>]*data-chart="chart-spend".*?</svg>', page, re.S).group(0)
    bars = [Decimal(v) for v in re.findall(r'class="bar" [^>]*data-value="([^"]+)"', spend_chart)]
    table = re.search(r'data-table="time".*?</table>', page, re.S).group(0)
    cells = re.findall(r'<tr><th scope="row">.*?</tr>', table, re.S)
    costs = [Decimal(re.findall(r'data-value="([^"]+)"', row)[0]) for row in cells]
    assert len(bars) == len(costs) == 7
    assert bars == costs
    assert sum(bars) == Decimal("1.25") + 2 + 3 + 4 + 5 + 6 + Decimal("0.25") * 5
    model_chart = re.search(r'<svg[^>]*data-chart="chart-model".*?</svg>', page, re.S).group(0)
    charted = [Decimal(v) for v in re.findall(r'data-value="([^"]+)"', model_chart)]
    model_table = re.search(r'data-table="model".*?</table>', page, re.S).group(0)
    listed = [Decimal(v) for v in re.findall(r'data-value="([^"]+)"', model_table)]
    assert charted == listed == sorted(listed, reverse=True)


def test_only_the_connections_a_person_may_use(client, research):
    make(default_connection(), 1, cost="1.00", label="public")
    make(research, 1, cost="50.00", label="secret-project")
    outsider = User.objects.create_user("otto")
    outsider.groups.add(Group.objects.get(name="Viewers"))
    client.force_login(outsider)
    page = client.get("/spend/").content.decode()
    assert "$1.00" in page and "$50.00" not in page and "secret-project" not in page
    # Naming the connection does not help, in the page or the CSV.
    page = client.get("/spend/?connection=research").content.decode()
    assert "secret-project" not in page and "No connection of yours has that name" in page
    text = b"".join(client.get("/spend/export.csv?table=label&connection=research")).decode()
    assert "secret-project" not in text


def test_one_connection_of_several(admin_client, research):
    make(default_connection(), 1, cost="1.00")
    make(research, 1, cost="50.00")
    page = admin_client.get("/spend/").content.decode()
    assert "By connection" in page and "$51.00" in page
    page = admin_client.get("/spend/?connection=research").content.decode()
    assert "$50.00" in page and "$51.00" not in page and "By connection" not in page


@pytest.mark.parametrize(
    "query,message",
    [
        ("range=custom&start=2026-05-01&end=2026-04-01", "end date is before the start date"),
        ("range=custom&start=2001-01-01&end=2026-04-01", "longer than five years"),
        ("range=custom&start=yesterday", "From: Enter a valid date."),
        ("range=forever", "Range: Select a valid choice."),
        ("by=hour", "By: Select a valid choice."),
        ("range=custom&start=2026-01-01&end=2026-12-31&by=day", "shown by week"),
    ],
)
def test_a_range_that_cannot_be_followed_says_why(viewer_client, query, message):
    response = viewer_client.get(f"/spend/?{query}")
    assert response.status_code == 200
    assert message in response.content.decode()


def test_dates_alone_choose_a_custom_range(viewer_client):
    make(default_connection(), 1, days_ago=40, cost="7.00")
    day = (timezone.now() - dt.timedelta(days=40)).date()
    page = viewer_client.get(f"/spend/?start={day}&end={day}").content.decode()
    assert "$7.00" in page


def test_csv_of_every_table_safe_for_spreadsheets(viewer_client):
    make(default_connection(), 1, label='=HYPERLINK("http://evil.example")')
    for table in ("time", "model", "person", "label", "connection"):
        response = viewer_client.get(f"/spend/export.csv?table={table}&range=7d")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert "attachment" in response["Content-Disposition"]
        rows = list(csv.reader(io.StringIO(b"".join(response).decode())))
        assert rows[0][-1] == "output_tokens"
        assert len(rows) >= 2
    text = b"".join(viewer_client.get("/spend/export.csv?table=label&range=7d")).decode()
    assert "'=HYPERLINK" in text
    response = viewer_client.get("/spend/export.csv?table=secrets")
    assert response.status_code == 400
    assert "Unknown table" in response.content.decode()


def test_a_page_view_only_reads_and_its_queries_do_not_grow_with_batches(viewer_client):
    def view() -> list[str]:
        with CaptureQueriesContext(db) as queries:
            assert viewer_client.get("/spend/?range=90d").status_code == 200
        return [q["sql"] for q in queries.captured_queries]

    for n in range(5):
        make(default_connection(), n, days_ago=n)
    spend_rollup()
    view()  # the person's lookups, kept for everyone's number (batches do not raise it)
    few = view()
    for n in range(5, 60):
        make(default_connection(), n, days_ago=n % 80, label=f"l{n}", model=f"m{n % 7}")
    spend_rollup()
    many = view()
    assert len(many) == len(few)
    writes = [q for q in many if q.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert [q for q in writes if "django_session" not in q] == []
    # Costs are read as stored: no price lookups on a page view.
    assert not any("batches_priceoverride" in q for q in many)


def test_nice_steps_and_column_geometry():
    assert charts.nice_step(0) == 1
    assert charts.nice_step(9.5) == 5  # 0, 5, 10
    assert charts.nice_step(1234) == 500
    points = [
        charts.Point(label=str(i), title="", value=v, text="") for i, v in enumerate([0, 5, 10])
    ]
    chart = charts.columns(points)
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == 0 and heights[2] == pytest.approx(2 * heights[1])
    assert all(bar.y + bar.height == pytest.approx(chart.plot_bottom) for bar in chart.bars)
    assert chart.ticks[-1].text == "10" and chart.ticks[0].text == "0"
    assert charts.nice_step(3, whole=True) == 1  # no half tokens
    empty = charts.columns([charts.Point(label="a", title="", value=0, text="")])
    assert empty.empty
    rows = charts.bars(points[::-1]).rows
    assert rows[0].width > rows[1].width > rows[2].width == 0


def test_figures_are_drawn_once_per_set_of_figures_and_a_change_shows_at_once(viewer_client):
    """The charts and tables are cached by a digest of what they show: a second view draws
    nothing again, and any change in the figures (a new cost) is on the next page."""
    from django.core.cache import caches

    caches["rows"].clear()
    make(default_connection(), 1, cost="1.00")
    first = viewer_client.get("/spend/?range=7d").content.decode()
    assert "$1.00" in first
    keys = len(caches["rows"]._cache)
    second = viewer_client.get("/spend/?range=7d").content.decode()
    figures = '<section class="stats"'
    assert second.split(figures, 1)[1] == first.split(figures, 1)[1]
    assert len(caches["rows"]._cache) == keys  # the same figures: nothing drawn again
    Batch.objects.filter(openai_id="batch_default_1").update(cost_usd=Decimal("2.50"))
    again = viewer_client.get("/spend/?range=7d").content.decode()
    assert "$2.50" in again and "$1.00" not in again
