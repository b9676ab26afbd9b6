"""The spend page: what the team spent and used over a range of days, by model, person, label
and connection, as charts drawn on the server with the same numbers in tables, and CSV."""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache as once
from typing import Any

from django import forms
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import get_template, render_to_string
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET

from .. import charts, roles
from ..cache import keys
from ..models import Connection
from ..models.costs import dollars
from ..services import result_files
from ..services import spend as spend_services
from ..templatetags.batchweb import tokens as tokens_text
from .access import rule

RANGES = [
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("12m", "Last 12 months"),
    ("month", "This month"),
    ("custom", "Dates below"),
]
GRAINS = [("", "Best fit"), ("day", "Day"), ("week", "Week"), ("month", "Month")]
TABLES = ("time", "model", "person", "label", "connection")
DEFAULT_RANGE = "30d"
LONGEST = dt.timedelta(days=5 * 366)  # five years of days is more than any chart can show
MOST_DAYS = 93  # bars by day beyond a quarter are too thin to read: weeks instead
SHOWN = 25  # rows of a breakdown table on the page; the CSV has them all
CHARTED = 8  # bars of a breakdown chart


class SpendForm(forms.Form):
    range = forms.ChoiceField(required=False, choices=RANGES, label="Range")
    start = forms.DateField(required=False, label="From", widget=forms.DateInput({"type": "date"}))
    end = forms.DateField(
        required=False, label="To (inclusive)", widget=forms.DateInput({"type": "date"})
    )
    by = forms.ChoiceField(required=False, choices=GRAINS, label="By")
    connection = forms.SlugField(required=False, max_length=50, label="Connection")


@dataclass
class Choice:
    """The range and grouping asked for, made sense of, with what could not be followed."""

    range: str
    start: dt.date
    end: dt.date
    grain: str
    connection: str
    problems: list[str] = field(default_factory=list)


def _choice(form: SpendForm, today: dt.date) -> Choice:
    problems: list[str] = []
    data: dict[str, Any] = {}
    if form.is_valid():
        data = form.cleaned_data
    else:
        for name, errors in form.errors.items():
            label = form.fields[name].label if name in form.fields else name
            problems.append(f"{label}: {' '.join(errors)}")
        data = {k: v for k, v in form.cleaned_data.items() if k not in form.errors}
    chosen = data.get("range") or (
        "custom" if data.get("start") or data.get("end") else DEFAULT_RANGE
    )
    start, end = _range(chosen, today)
    if chosen == "custom":
        start = data.get("start") or start
        end = data.get("end") or today
        if end < start:
            problems.append("The end date is before the start date: showing the last 30 days.")
            chosen, (start, end) = DEFAULT_RANGE, _range(DEFAULT_RANGE, today)
        elif end - start > LONGEST:
            problems.append("That range is longer than five years: showing the last 12 months.")
            chosen, (start, end) = "12m", _range("12m", today)
    grain = data.get("by") or _best_grain(start, end)
    if grain == "day" and (end - start).days + 1 > MOST_DAYS:
        problems.append(
            f"More than {MOST_DAYS} days are too many bars to read one by one: shown by week."
        )
        grain = "week"
    return Choice(
        range=chosen,
        start=start,
        end=end,
        grain=grain,
        connection=data.get("connection") or "",
        problems=problems,
    )


def _range(name: str, today: dt.date) -> tuple[dt.date, dt.date]:
    if name == "7d":
        return today - dt.timedelta(days=6), today
    if name == "90d":
        return today - dt.timedelta(days=89), today
    if name == "12m":  # whole months, so the month roll-ups serve it
        month = today.month - 11
        year = today.year + (month - 1) // 12
        return dt.date(year, (month - 1) % 12 + 1, 1), today
    if name == "month":
        return today.replace(day=1), today
    return today - dt.timedelta(days=29), today


def _best_grain(start: dt.date, end: dt.date) -> str:
    days = (end - start).days + 1
    if days <= 45:
        return "day"
    if days <= 190:
        return "week"
    return "month"


def _query(request: HttpRequest) -> tuple[Choice, spend_services.SpendQuery, list[Any], Any]:
    today = timezone.now().astimezone(dt.UTC).date()
    choice = _choice(SpendForm(request.GET), today)
    connections = Connection.objects.listed_to(request.user)
    chosen = None
    if choice.connection:
        chosen = next((c for c in connections if c.slug == choice.connection), None)
        if chosen is None:
            choice.problems.append("No connection of yours has that name: showing all of them.")
            choice.connection = ""
    ids = (chosen.pk,) if chosen else tuple(c.pk for c in connections)
    query = spend_services.SpendQuery(
        start=choice.start, end=choice.end, grain=choice.grain, connection_ids=ids, today=today
    )
    return choice, query, connections, chosen


@rule(roles.VIEW)
@require_GET
def spend(request: HttpRequest) -> HttpResponse:
    choice, query, connections, chosen = _query(request)
    report = spend_services.spend_report(query=query)
    params = {
        k: v
        for k, v in {
            "range": choice.range,
            "start": choice.start.isoformat() if choice.range == "custom" else "",
            "end": choice.end.isoformat() if choice.range == "custom" else "",
            "by": request.GET.get("by", "") if choice.grain == request.GET.get("by") else "",
            "connection": choice.connection,
        }.items()
        if v
    }
    tables = [
        _breakdown("model", "By model", report.by["model"], "model"),
        _breakdown("person", "By person", report.by["person"], "creator"),
        _breakdown("label", "By label", report.by["label"], "label"),
    ]
    if len(connections) > 1 and chosen is None:
        tables.append(_breakdown("connection", "By connection", report.by["connection"], ""))
    figures = {
        "report": report,
        "total": report.total,
        "chosen": chosen,
        "grain_word": choice.grain,
        "time": _time_charts(report),
        "tables": tables,
        "csv_query": urlencode(params),
    }
    context = {
        "form": SpendForm(
            initial={
                "range": choice.range,
                "start": choice.start,
                "end": choice.end,
                "by": request.GET.get("by", ""),
                "connection": choice.connection,
            }
        ),
        "choice": choice,
        "connections": connections,
        "chosen": chosen,
        "show_connection": len(connections) > 1,
        "range_words": _range_words(choice),
    }
    context["figures"] = _figures_html(figures)
    return render(request, "batches/spend/spend.html", context)


FIGURES_TEMPLATE = "batches/spend/figures.html"


def _figures_html(context: dict[str, Any]) -> SafeString:
    """The totals, charts and tables, rendered once per set of figures: most of a spend page's
    time was the template engine drawing the same bars again. The key is a digest of every
    figure, name and link the fragment shows (and of the template's text), so equal keys mean
    equal HTML: never stale, nothing to invalidate, nothing person-specific (a person's
    connections only change which figures there are)."""
    report: spend_services.SpendReport = context["report"]
    shown = (
        report.query.start,
        report.query.end,
        report.query.grain,
        report.over_time,
        report.total,
        [(t.table, t.title, t.list_filter, t.more, t.shares, t.chart) for t in context["tables"]],
        context["chosen"].name if context["chosen"] else "",
        context["csv_query"],
        _template_text(),
    )
    key = keys.spend_figures_key(shown)
    store = caches[keys.ROWS]
    html = store.get(key)
    if html is None:
        html = render_to_string(FIGURES_TEMPLATE, context)
        store.set(key, html)
    return mark_safe(html)  # noqa: S308 - rendered by the template engine above, escaped there


@once
def _template_text() -> str:
    template = get_template(FIGURES_TEMPLATE).template
    return template.source + "".join(
        get_template(name).template.source
        for name in ("batches/spend/columns.svg.html", "batches/spend/bars.svg.html")
    )


@rule(roles.VIEW)
@require_GET
def spend_export(request: HttpRequest) -> StreamingHttpResponse | HttpResponse:
    table = request.GET.get("table", "time")
    if table not in TABLES:
        return HttpResponse(
            f"Unknown table. Ask for one of: {', '.join(TABLES)}.",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    choice, query, _connections, _chosen = _query(request)
    report = spend_services.spend_report(query=query)
    writer = csv.writer(result_files.Echo())
    table_rows = spend_services.spend_csv(report=report, table=table)
    rows = (writer.writerow([result_files.csv_safe(v) for v in row]) for row in table_rows)
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    name = f"spend-{table}-{choice.start:%Y%m%d}-{choice.end:%Y%m%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# --- Charts and tables --------------------------------------------------------------------------


def _range_words(choice: Choice) -> str:
    if choice.start == choice.end:
        return f"{choice.start:%-d %b %Y}"
    return f"{choice.start:%-d %b %Y} to {choice.end:%-d %b %Y}"


def _bucket_words(first: dt.date, last: dt.date, grain: str) -> tuple[str, str]:
    """(short label under a bar, full words for its tooltip and table)."""
    if grain == "month":
        return f"{first:%b %Y}", (
            f"{first:%B %Y}"
            if first.day == 1 and (last + dt.timedelta(days=1)).day == 1
            else f"{first:%-d %b} to {last:%-d %b %Y}"
        )
    if grain == "week":
        return f"{first:%-d %b}", f"{first:%-d %b} to {last:%-d %b %Y}"
    return f"{first:%-d %b}", f"{first:%a %-d %b %Y}"


def _money_tick(value: float, step: float) -> str:
    """$0, $0.00002, $2.50, $1,500: as many decimals as the step needs, no more."""
    if value == 0:
        return "$0"
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"${value:,.{decimals}f}"


def _tokens_tick(value: float, step: float) -> str:
    return tokens_text(value)


@dataclass
class TimeRow:
    first: dt.date
    last: dt.date
    words: str
    figures: spend_services.Figures


def _time_charts(report: spend_services.SpendReport) -> dict[str, Any]:
    grain = report.query.grain
    rows, spend_points, input_points, output_points = [], [], [], []
    for first, last, figures in report.over_time:
        short, words = _bucket_words(first, last, grain)
        rows.append(TimeRow(first=first, last=last, words=words, figures=figures))
        cost = dollars(figures.cost_usd) or "$0.00"
        spend_points.append(
            charts.Point(
                label=short,
                title=f"{words}: {cost} ({figures.batches} batches)",
                value=figures.cost_usd,
                text=cost,
            )
        )
        input_points.append(
            charts.Point(
                label=short,
                title=f"{words}: {figures.input_tokens:,} input tokens",
                value=figures.input_tokens,
                text=f"{figures.input_tokens:,}",
            )
        )
        output_points.append(
            charts.Point(
                label=short,
                title=f"{words}: {figures.output_tokens:,} output tokens",
                value=figures.output_tokens,
                text=f"{figures.output_tokens:,}",
            )
        )
    return {
        "rows": rows,
        "spend": charts.columns(spend_points, tick_text=_money_tick),
        "tokens": charts.columns(
            input_points, tops=output_points, tick_text=_tokens_tick, whole=True
        ),
    }


@dataclass
class Breakdown:
    table: str
    title: str
    shares: list[spend_services.Share]
    chart: charts.BarChart
    list_filter: str
    more: int

    @property
    def heading_id(self) -> str:
        return f"by-{self.table}"


def _breakdown(
    table: str, title: str, shares: list[spend_services.Share], list_filter: str
) -> Breakdown:
    charted = shares[:CHARTED]
    points = [
        charts.Point(
            label=share.name,
            title=f"{share.name}: {dollars(share.figures.cost_usd) or '$0.00'}"
            f" ({share.figures.batches} batches)",
            value=share.figures.cost_usd,
            text=dollars(share.figures.cost_usd) or "$0.00",
        )
        for share in charted
    ]
    others = shares[CHARTED:]
    if others:
        rest = sum((s.figures.cost_usd for s in others), Decimal(0))
        points.append(
            charts.Point(
                label=f"{len(others)} others",
                title=f"{len(others)} others: {dollars(rest) or '$0.00'}",
                value=rest,
                text=dollars(rest) or "$0.00",
            )
        )
    return Breakdown(
        table=table,
        title=title,
        shares=shares[:SHOWN],
        chart=charts.bars(points),
        list_filter=list_filter,
        more=max(len(shares) - SHOWN, 0),
    )
