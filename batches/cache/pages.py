"""The busiest pages (the list, a batch's page, the list's live rows), drawn once per cache
generation and kept in Django's cache (issue 14).

A page is its body (the list, the batch) inside the site's frame (base.html: the menu, the
freshness line, outage banners, messages). The body is most of the work: queries, 50 rows,
filters, a timeline. It is kept under a key made of:

- the cache generations (batches/cache/generations.py): everyone's and those of the
  connections the page shows, raised after every committed write to what the bodies show, so
  a body is never older than the last write when it is served;
- the person (their id: the body holds buttons for their role, their watch, only the
  connections they may see) and the connections they may see now;
- the page, the full path (query string included) and whatever the view adds (the batch);
- the templates' own text, so that a deploy never serves bodies of the old shape from a shared
  cache.

The whole page, frame included, is kept under the same key plus what the frame shows that
changes without a write to batches: the sync states of the person's connections (a sync pass
writes them). The frame alone is kept too (`_frame`: the person, the view, the title, the
sync states, everyone's generation, with marks where the body and the request's path go), so a
page drawn afresh draws its body only. A request with a message to show draws its frame.

Three things change with the clock or the request, and are put in at serve time: "3 h ago"
(reltime leaves a mark, batchweb.fill_ago puts the words in), the CSRF token of the forms (a
mark replaced by this request's token) and the frame's Refresh link (this request's path).
The rest that moves with the clock (finish-time estimates, "expires in") may be up to
TIMEOUT_SECONDS old.

The default cache is per process (LocMemCache, the "pages" alias); with CACHE_URL one cache
(Redis) is shared by every web process, since the key, not the process, says what a page
shows, and the keys name the code's version (settings.CACHES).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Iterable
from functools import cache as once
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.cache import caches
from django.db import connections, router
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.utils.html import escape

from ..models import Connection, SyncState
from ..templatetags.batchweb import ago_later, fill_ago
from . import generations

CACHE_ALIAS = "pages"
TIMEOUT_SECONDS = 60
# Where a form's CSRF token goes: NUL never reaches a page otherwise (payloads.clean_text).
_CSRF_MARK = "\x00csrf\x00"
# Where the body goes in a kept frame, and where the request's path goes (its Refresh link).
_BODY_MARK = "\x00body\x00"
_PATH_MARK = "\x00path\x00"
FRAME_TEMPLATE = "batches/framed.html"


def framed(
    request: HttpRequest,
    *,
    body_template: str,
    context: Callable[[], dict[str, Any]],
    title: str = "",
    vary: tuple[Any, ...] = (),
    frame_template: str = FRAME_TEMPLATE,
    about: Iterable[int] | None = None,
    refresh_url: str = "",
) -> HttpResponse:
    """The page: the body from the cache (drawn by `body_template` with `context()` when the
    cache has none for this key) in its frame. The whole page is kept too, for as long as the
    freshness line and banners it shows stay the same; a request with a message to show draws
    its frame. ABOUT: the connections whose batches the body shows (default: every one the
    person may see); a write to another connection's batches keeps it. REFRESH_URL: where the
    freshness line's Refresh link goes (default: this request's path)."""
    if about is None:
        about = Connection.objects.visible_to(request.user).ids
    about = tuple(about)
    if len(messages.get_messages(request)):  # counted, not read: they stay for the page
        body = _body(request, body_template, context, vary, about)
        frame = _frame(request, frame_template, title, refresh_url, keep=False)
        return HttpResponse(_served(request, frame.replace(_BODY_MARK, body, 1)))
    freshness = _freshness(request)
    key = _key(request, frame_template, (vary, title, frame_template, freshness), about)
    html = caches[CACHE_ALIAS].get(key)
    if html is None:
        body = _body(request, body_template, context, vary, about)
        frame = _frame(request, frame_template, title, refresh_url, freshness=freshness)
        html = frame.replace(_BODY_MARK, body, 1)
        caches[CACHE_ALIAS].set(key, html, timeout=TIMEOUT_SECONDS)
    return HttpResponse(_served(request, html))


def _frame(
    request: HttpRequest,
    template: str,
    title: str,
    refresh_url: str,
    *,
    keep: bool = True,
    freshness: tuple[Any, ...] = (),
) -> str:
    """The frame (base.html: menu, banners, freshness line; or a live fragment's freshness
    line) around a mark where the body goes, kept apart from any body: a page drawn afresh
    (another filter, another page of rows) puts its body in the same frame. The frame shows
    the person, their role and connections (everyone's generation), the page it is on (the
    view's name, the title), the sync states (FRESHNESS) and the Refresh link, which is this
    request's path (put in at serve time) unless the view names it. Not kept (KEEP false)
    when it shows messages."""
    user = request.user
    parts = (
        generations.of(user).everyone,
        user.pk,
        Connection.objects.visible_to(user).ids,
        template,
        request.resolver_match.url_name if request.resolver_match else "",
        title,
        refresh_url,
        freshness,
        templates_digest(),
    )
    digest = hashlib.blake2b(pickle.dumps(parts, protocol=5), digest_size=16).hexdigest()
    key = f"frame:{digest}"
    frame = caches[CACHE_ALIAS].get(key) if keep else None
    if frame is None:
        with ago_later():
            context = {
                "body": _BODY_MARK,
                "title": title,
                "csrf_token": _CSRF_MARK,
                "refresh_url": refresh_url or _PATH_MARK,
            }
            frame = render_to_string(template, context, request)
        if keep:
            caches[CACHE_ALIAS].set(key, frame, timeout=TIMEOUT_SECONDS)
    return frame


def _body(
    request: HttpRequest,
    template: str,
    context: Callable[[], dict[str, Any]],
    vary: tuple[Any, ...],
    about: tuple[int, ...],
) -> str:
    """`template` drawn with `context()`, or its copy from the cache, with its marks in."""
    pages = caches[CACHE_ALIAS]
    key = _key(request, template, vary, about)
    html = pages.get(key)
    if html is None:
        with ago_later():
            html = render_to_string(template, {**context(), "csrf_token": _CSRF_MARK}, request)
        pages.set(key, html, timeout=TIMEOUT_SECONDS)
    return html


def _served(request: HttpRequest, html: str) -> str:
    """The marks filled in: this request's CSRF token and path, "3 h ago" as of now."""
    if _CSRF_MARK in html:
        html = html.replace(_CSRF_MARK, get_token(request))
    if _PATH_MARK in html:
        html = html.replace(_PATH_MARK, escape(request.get_full_path()))
    return fill_ago(html)


def _freshness(request: HttpRequest) -> tuple[Any, ...]:
    """What the frame's freshness line and banners are drawn from: every column of the sync
    states of the connections the person may see, as rows (part of the whole page's key; one
    query in SQL of its own, since on a page served from the cache the ORM's work of making
    objects would cost more than the query)."""
    ids = [c.pk for c in Connection.objects.listed_to(request.user)]
    if not ids:
        return ()
    alias = router.db_for_read(SyncState)
    table = connections[alias].ops.quote_name(SyncState._meta.db_table)
    marks = ", ".join(["%s"] * len(ids))
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM {table} WHERE connection_id IN ({marks}) ORDER BY connection_id",  # noqa: S608
            ids,
        )
        return tuple(cursor.fetchall())


def _key(request: HttpRequest, template: str, vary: tuple[Any, ...], about: tuple[int, ...]) -> str:
    user = request.user
    parts = (
        # Everyone's number and those of the connections shown; read again if the request has
        # written since.
        generations.of(user).scope(about),
        user.pk,
        Connection.objects.visible_to(user).ids,
        template,
        request.get_full_path(),
        vary,
        templates_digest(),
    )
    digest = hashlib.blake2b(pickle.dumps(parts, protocol=5), digest_size=16).hexdigest()
    return f"page:{digest}"


def templates_digest() -> str:
    """Of every template file of the project's templates folder: in every cache key, so a
    deploy that changes a template never serves what the old one drew from a shared cache."""
    return _templates_digest.__wrapped__() if settings.DEBUG else _templates_digest()


@once  # per process; with DEBUG (templates reloaded on change) read each time
def _templates_digest() -> str:
    text = hashlib.blake2b(digest_size=8)
    for folder in settings.TEMPLATES[0]["DIRS"]:
        for path in sorted(Path(folder).rglob("*.html")):
            text.update(path.read_bytes())
    return text.hexdigest()
