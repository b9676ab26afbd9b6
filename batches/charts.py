"""The geometry of the spend page's charts: bars and axes in SVG user units, computed here and
drawn by templates (templates/batches/spend/*.svg.html), so a chart needs no JavaScript and
no inline style. Each bar keeps its exact value and words, which the templates put in its
tooltip and in the table beside the chart."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

Number = int | float | Decimal


@dataclass(frozen=True)
class Point:
    """One bar: `label` under it (may be ""), `title` the words for its tooltip."""

    label: str
    title: str
    value: Number
    text: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    point: Point
    label_x: float
    label_y: float
    show_label: bool
    # The stacked part above the bar (the second series), if any.
    top_y: float = 0.0
    top_height: float = 0.0
    top_point: Point | None = None


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True)
class ColumnChart:
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    bars: list[Bar]
    ticks: list[Tick]
    empty: bool

    @property
    def tick_x(self) -> float:
        return self.plot_left - 6

    @property
    def middle_x(self) -> float:
        return (self.plot_left + self.plot_right) / 2

    @property
    def middle_y(self) -> float:
        return (self.plot_top + self.plot_bottom) / 2


@dataclass(frozen=True)
class Row:
    y: float
    width: float
    point: Point
    text_y: float
    value_x: float


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    name_width: float
    bar_left: float
    rows: list[Row]
    bar_height: float
    empty: bool


def nice_step(top: float, ticks: int = 4, *, whole: bool = False) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `ticks` lines up to `top`;
    `whole`: at least 1 (counts of things)."""
    if top <= 0:
        return 1.0
    if whole and top < ticks:
        return 1.0
    rough = top / ticks
    power = 10 ** math.floor(math.log10(rough))
    for factor in (1, 2, 5, 10):
        if factor * power >= rough:
            return factor * power
    return 10 * power  # pragma: no cover - the loop always returns


def columns(
    points: list[Point],
    *,
    tops: list[Point] | None = None,
    tick_text: Callable[[float, float], str] = lambda value, step: f"{value:g}",
    whole: bool = False,
    width: int = 720,
    height: int = 240,
    labels: int = 8,
) -> ColumnChart:
    """Vertical bars in order (time), optionally with a second series stacked on top. At most
    `labels` bars get a label under them, evenly spread, so the axis stays readable."""
    left, right, top, bottom = 64.0, width - 8.0, 12.0, height - 28.0
    totals = [
        float(p.value) + (float(tops[i].value) if tops else 0.0) for i, p in enumerate(points)
    ]
    peak = max(totals, default=0.0)
    step = nice_step(peak, whole=whole)
    scale_top = step * max(1, math.ceil(peak / step)) if peak > 0 else step
    ticks = [
        Tick(y=bottom - (bottom - top) * (i * step) / scale_top, text=tick_text(i * step, step))
        for i in range(round(scale_top / step) + 1)
    ]
    slot = (right - left) / max(len(points), 1)
    gap = min(slot * 0.2, 6.0)
    every = max(1, math.ceil(len(points) / labels))
    bars = []
    for i, point in enumerate(points):
        height_one = (bottom - top) * float(point.value) / scale_top
        top_point = tops[i] if tops else None
        height_two = (bottom - top) * float(top_point.value) / scale_top if top_point else 0.0
        x = left + i * slot + gap / 2
        bars.append(
            Bar(
                x=round(x, 2),
                y=round(bottom - height_one, 2),
                width=round(max(slot - gap, 1.0), 2),
                height=round(height_one, 2),
                point=point,
                label_x=round(x + (slot - gap) / 2, 2),
                label_y=bottom + 16,
                show_label=bool(point.label) and i % every == 0,
                top_y=round(bottom - height_one - height_two, 2),
                top_height=round(height_two, 2),
                top_point=top_point,
            )
        )
    return ColumnChart(
        width=width,
        height=height,
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
        bars=bars,
        ticks=ticks,
        empty=peak <= 0,
    )


def bars(points: list[Point], *, width: int = 480, row_height: int = 24) -> BarChart:
    """Horizontal bars, one per row, largest first as given: a name on the left, the value
    at the end of the bar."""
    name_width = 150.0
    bar_left = name_width + 8
    value_room = 90.0
    span = width - bar_left - value_room
    peak = max((float(p.value) for p in points), default=0.0)
    rows = []
    for i, point in enumerate(points):
        length = span * float(point.value) / peak if peak > 0 else 0.0
        y = i * row_height + 4
        rows.append(
            Row(
                y=y,
                width=round(max(length, 0.0), 2),
                point=point,
                text_y=y + row_height * 0.62,
                value_x=round(bar_left + max(length, 0.0) + 6, 2),
            )
        )
    return BarChart(
        width=width,
        height=max(len(points), 1) * row_height + 8,
        name_width=name_width,
        bar_left=bar_left,
        rows=rows,
        bar_height=row_height - 8,
        empty=peak <= 0,
    )
