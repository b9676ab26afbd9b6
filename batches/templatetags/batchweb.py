"""Small presentation helpers shared by the templates."""

from __future__ import annotations

import contextvars
import datetime as dt
import html
import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from ..payloads import clean_text

register = template.Library()


@register.filter
def reltime(value: dt.datetime | None) -> str:
    """ "3 hours ago" with the exact UTC time on hover, machine-readable for scripts."""
    if not value:
        return format_html('<span class="muted">{}</span>', "—")
    exact = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    words = f"\x00ago:{value.timestamp():.6f}\x00" if _AGO_LATER.get() else ago(value)
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact, words)


# Pages kept in a cache (batches/cache/pages.py) are drawn with a mark where each "3 h
# ago" goes, and the words are put in when the page is served: a cached page says how long ago
# as exactly as a fresh one. Templates escape NUL nowhere, but no text of batchweb's or of
# upstream's reaches a page with one (payloads.clean_text removes them).
_AGO_LATER: contextvars.ContextVar[bool] = contextvars.ContextVar("ago_later", default=False)
_AGO_MARK = re.compile("\x00ago:(-?[0-9]+\\.[0-9]+)\x00")


@contextmanager
def ago_later() -> Iterator[None]:
    """Within: reltime leaves a mark for `fill_ago` instead of the words."""
    token = _AGO_LATER.set(True)
    try:
        yield
    finally:
        _AGO_LATER.reset(token)


def fill_ago(html: str, now: dt.datetime | None = None) -> str:
    """The marks reltime left (under `ago_later`) replaced by the words, as of `now`."""
    if "\x00" not in html:
        return html
    now = now or timezone.now()
    return _AGO_MARK.sub(
        lambda m: ago(dt.datetime.fromtimestamp(float(m[1]), tz=dt.UTC), now), html
    )


def ago(value: dt.datetime, now: dt.datetime | None = None) -> str:
    """Compact relative time, as people say it in a busy table: "40 s ago", "3 h ago", "in 5 h"."""
    seconds = ((now or timezone.now()) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        text = f"{int(seconds)} s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} min"
    elif seconds < 48 * 3600:
        text = f"{int(seconds // 3600)} h"
    elif seconds < 60 * 86400:
        text = f"{int(seconds // 86400)} d"
    else:
        return value.astimezone(dt.UTC).strftime("%-d %b %Y")
    return f"in {text}" if future else f"{text} ago"


@register.filter
def utc(value: dt.datetime | None) -> str:
    if not value:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def duration(seconds: float | int | None) -> str:
    """A gap between two moments in the largest two units: "2 h 5 min", "40 s"."""
    if seconds is None:
        return ""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


# The most of a JSON value a page shows: a hostile or huge payload must not make a page of
# megabytes (the file itself can be downloaded whole).
PRETTY_JSON_CHARS = 100_000


@register.filter
def pretty_json(value: Any, limit: int | str | None = None) -> str:
    """JSON for a <pre>, indented. With `limit`, each string longer than that many characters
    is cut and says how much was left out; the whole text is cut at PRETTY_JSON_CHARS."""
    try:
        if limit:
            value = _cut_strings(value, int(limit))
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    except RecursionError:  # nested deeper than the indenting encoder goes
        return "(nested too deeply to show here: download the file to read it)"
    if len(text) > PRETTY_JSON_CHARS:
        left = len(text) - PRETTY_JSON_CHARS
        text = f"{text[:PRETTY_JSON_CHARS]}\n… ({left:,} more characters: download the file)"
    # A lone surrogate (from a JSON "\ud800" escape) cannot be sent as UTF-8.
    return clean_text(text)


def _cut_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}… ({len(value) - limit:,} more characters)"
    if isinstance(value, dict):
        return {k: _cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v, limit) for v in value]
    return value


@register.filter
def head(value: Any, count: int) -> list[Any]:
    """The first `count` items of any iterable (a dict's items too, which `slice` cannot cut):
    a hostile upstream may send thousands of metadata pairs where the API allows 16."""
    return list(itertools.islice(value, int(count)))


@register.filter
def list_url(value: Any) -> str:
    """The list page with VALUE's query string, when VALUE is the list's own path (what its live
    rows carry in `back`, so their Refresh link reloads the list as filtered); the plain list
    for anything else."""
    base = reverse("batch-list")
    text = str(value or "")
    path, _, query = text.partition("?")
    if path != base or any(c in text for c in "\\\r\n"):
        return base
    return f"{base}?{query}" if query else base


@register.simple_tag
def options(
    items: Any, selected: Any, value: str = "", text: str = "", truncate: int = 0
) -> SafeString:
    """The <option>s of a filter's <select>, the SELECTED one marked: one escaped join instead
    of a template loop (the list's label filter alone has up to 200, and drawing the list
    afresh is what people wait for after every write). VALUE and TEXT name attributes of each
    item (a connection's slug and name); without them the item is both."""
    chosen = "" if selected is None else str(selected)
    parts = []
    for item in items:
        shown = str(getattr(item, value) if value else item)
        words = str(getattr(item, text) if text else item)
        if truncate and len(words) > truncate:
            words = Truncator(words).chars(truncate)
        mark = " selected" if shown == chosen else ""
        # The standard library's escape, as Django's is, without its lazy-text wrapper.
        parts.append(f'<option value="{html.escape(shown)}"{mark}>{html.escape(words)}</option>')
    return mark_safe("".join(parts))  # noqa: S308 - every value escaped above


@register.simple_tag
def copyable(value: str, css: str = "") -> str:
    """An id in monospace with a copy button (the button needs JavaScript; the id is selectable
    text either way)."""
    if not value:
        return format_html('<span class="muted">{}</span>', "—")
    return format_html(
        '<span class="copyable {}"><code title="{}"><bdi>{}</bdi></code>'
        '<button type="button" class="copy" data-copy="{}" aria-label="Copy {}" hidden>'
        "copy</button></span>",
        css,
        value,
        value,
        value,
        value,
    )


@register.simple_tag(takes_context=True)
def query_with(context: Any, **changes: Any) -> str:
    """The current query string with some parameters changed or removed (value "")."""
    params = context["request"].GET.copy()
    for key in ("after", "before"):
        params.pop(key, None)
    for key, value in changes.items():
        if value in ("", None):
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.filter
def usd(value: Any) -> str:
    """A dollar figure for people: "$1.23", "under $0.01"."""
    from ..models.costs import dollars

    return dollars(value)


@register.filter
def dollars_or_zero(value: Any) -> str:
    """As `usd`, and "$0.00" for nothing (a sum over no priced batches)."""
    from ..models.costs import dollars

    return dollars(value) or "$0.00"


@register.filter
def intcomma_plain(value: Any) -> str:
    """12,345,678: thousands separated by commas, whatever the locale settings."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return ""


@register.filter
def tokens(value: Any) -> str:
    """A token count in short: 950, 12.3k, 4.56M, 1.2B."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.3g}{unit}"
    return f"{number:g}"
