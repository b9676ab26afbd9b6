"""The page cache (issue 14): the list, a batch's page and the live rows are drawn once per
cache generation and person, and a cached copy never shows a batch older than the last write."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from batches.cache import generations as generation
from batches.models import Batch, BatchTally, Connection, Event, Watch
from batches.services.batches import batch_upsert
from batches.templatetags.batchweb import ago_later, fill_ago, reltime
from tests.conftest import make_batch

LIST = reverse("batch-list")
BASE_TIME = 1764000000


def add(openai_id: str, **fields) -> Batch:
    fields.setdefault("metadata", None)
    return batch_upsert(payload=make_batch(id=openai_id, created_at=BASE_TIME, **fields)).batch


def drawn(response) -> bool:
    """Whether the request drew the page's body (False: served from the cache)."""
    names = {t.name for t in response.templates}
    return bool(names & {"batches/list.html", "batches/detail.html"}) or (
        "batches/includes/rows_live.html" in names
    )


@pytest.fixture
def one(db) -> Batch:
    return add("batch_one", status="completed", completed_at=BASE_TIME + 60)


def test_a_second_request_is_served_from_the_cache(viewer_client, one):
    first = viewer_client.get(LIST)
    second = viewer_client.get(LIST)
    assert drawn(first) and not drawn(second)
    assert first.content.count(b"batch_one") == second.content.count(b"batch_one") > 0
    # The frame is drawn each time: the title, the menu and the person's name are there.
    assert b"<title>Batches" in second.content and b"vic" in second.content


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda b: Batch.objects.filter(pk=b.pk).update(label="renamed"), id="update"),
        pytest.param(lambda b: (setattr(b, "label", "renamed"), b.save()), id="save"),
        pytest.param(
            lambda b: add("batch_renamed", status="in_progress", metadata={"job": "renamed"}),
            id="new batch",
        ),
        pytest.param(
            lambda b: Connection.objects.filter(pk=b.connection_id).update(name="renamed"),
            id="connection renamed (update)",
        ),
    ],
)
def test_every_write_to_what_the_list_shows_is_seen_at_once(viewer_client, one, write):
    viewer_client.get(LIST)
    before = generation.current()
    write(one)
    assert generation.current() > before
    page = viewer_client.get(LIST)
    assert drawn(page)
    assert b"renamed" in page.content


def test_a_connection_renamed_in_the_admin_is_seen(admin_client, one):
    second = Connection.objects.create(slug="other", name="Other", base_url="http://127.0.0.1:9")
    admin_client.get(LIST)
    second.name = "Elsewhere"
    second.save()
    assert b"Elsewhere" in admin_client.get(LIST).content


def test_a_deleted_batch_leaves_the_list(viewer_client, one):
    assert b"batch_one" in viewer_client.get(LIST).content
    one.delete()
    BatchTally.rebuild()
    assert b"batch_one" not in viewer_client.get(LIST).content


def test_bookkeeping_no_page_shows_does_not_empty_the_cache(viewer_client, one):
    viewer_client.get(LIST)
    before = generation.current()
    Batch.objects.filter(pk=one.pk).update(next_refresh_at=timezone.now())  # a refresh lease
    Batch.objects.filter(pk=one.pk).update(spend_rolled=True)  # the spend roll-up's mark
    Batch.objects.filter(pk=one.pk).update(synced_at=timezone.now())  # seen unchanged
    one.save(update_fields=["next_refresh_at"])
    assert generation.current() == before
    assert not drawn(viewer_client.get(LIST))


def test_each_person_gets_their_own_copy(client, one, viewer, submitter):
    """Another person's cached body (their buttons, their connections) is never served."""
    client.force_login(submitter)
    theirs = client.get(LIST)
    assert b"New batch</a>" in theirs.content.split(b"<main", 1)[1]
    other = Client()
    other.force_login(viewer)
    mine = other.get(LIST)
    assert drawn(mine)
    assert b"New batch</a>" not in mine.content.split(b"<main", 1)[1]


def frames_drawn(response) -> int:
    return sum(t.name == "base.html" for t in response.templates)


def test_a_list_drawn_afresh_goes_in_the_frame_kept_for_the_person(client, one, viewer, submitter):
    """The frame (menu, banners, freshness line) is kept apart from the body: another filter
    draws the body only. Its Refresh link is each request's own path, and another person gets
    a frame of their own."""
    client.force_login(submitter)
    first = client.get(LIST)
    hostile = client.get(LIST, {"q": '"><script>x</script>'})

    assert frames_drawn(first) == 1 and drawn(hostile) and frames_drawn(hostile) == 0
    refresh = re.search(rb'<a href="([^"]*)" class="refresh-link">', hostile.content).group(1)
    assert refresh == f"{LIST}?q=%22%3E%3Cscript%3Ex%3C%2Fscript%3E".encode()
    assert b"<script>x" not in hostile.content and b"\x00" not in hostile.content
    assert b"New batch</a>" in hostile.content.split(b"<main", 1)[0]  # the submitter's menu

    other = Client()
    other.force_login(viewer)
    theirs = other.get(LIST, {"q": "x"})
    assert frames_drawn(theirs) == 1
    assert b"New batch</a>" not in theirs.content.split(b"<main", 1)[0]
    assert viewer.username.encode() in theirs.content.split(b"<main", 1)[0]


def test_a_person_who_loses_a_connection_stops_seeing_it_at_once(client, viewer, db):
    research = Connection.objects.create(
        slug="research", name="Research", base_url="http://127.0.0.1:9"
    )
    team = Group.objects.create(name="research-team")
    research.groups.add(team)
    viewer.groups.add(team)
    batch_upsert(
        payload=make_batch(id="batch_secret", created_at=BASE_TIME, metadata=None),
        connection=research,
    )
    client.force_login(viewer)
    assert b"batch_secret" in client.get(LIST).content
    viewer.groups.remove(team)
    assert b"batch_secret" not in client.get(LIST).content
    detail = client.get(reverse("batch-detail", args=["research", "batch_secret"]))
    assert detail.status_code == 404


def test_the_forms_carry_this_sessions_csrf_token(operator, one):
    """The body is kept with a mark where each form's token goes; every session gets its own
    token, and a form from the cached copy is accepted."""
    first, second = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    first.force_login(operator)
    second.force_login(operator)
    tokens = []
    for client in (first, second):
        page = client.get(LIST)
        (token,) = re.findall(
            rb'action="/batches/sync/"[^>]*>\s*<input type="hidden" name="csrfmiddlewaretoken" '
            rb'value="([^"]+)"',
            page.content,
        )
        tokens.append(token)
    assert not drawn(page)  # the second session's page came from the cache
    assert b"\x00" not in page.content
    assert tokens[0] != tokens[1]
    answer = second.post(
        reverse("batch-sync"), {"csrfmiddlewaretoken": tokens[1].decode(), "next": LIST}
    )
    assert answer.status_code == 302  # not 403: the token is this session's


def test_relative_times_are_worked_out_when_served():
    created = timezone.now() - dt.timedelta(hours=3)
    with ago_later():
        marked = reltime(created)
    assert "h ago" not in marked
    assert "3 h ago" in fill_ago(marked)
    assert "5 h ago" in fill_ago(marked, now=created + dt.timedelta(hours=5))
    assert reltime(created) == fill_ago(marked)


def test_a_cached_list_says_how_long_ago_as_of_now(viewer_client, db, monkeypatch):
    an_hour_ago = timezone.now() - dt.timedelta(hours=1)
    batch_upsert(
        payload=make_batch(
            id="batch_recent", created_at=int(an_hour_ago.timestamp()), metadata=None
        )
    )
    assert b"1 h ago" in viewer_client.get(LIST).content
    later = timezone.now() + dt.timedelta(days=3)
    monkeypatch.setattr("batches.cache.pages.fill_ago", lambda html: fill_ago(html, now=later))
    page = viewer_client.get(LIST)
    assert not drawn(page)
    assert b"3 d ago" in page.content and b"1 h ago" not in page.content


def test_a_batch_page_follows_its_events_and_watches(viewer_client, viewer, one):
    url = one.get_absolute_url()
    assert drawn(viewer_client.get(url))
    assert not drawn(viewer_client.get(url))
    Watch.objects.create(user=viewer, batch=one)
    assert drawn(viewer_client.get(url))
    Event.objects.create(batch=one, action=Event.Action.LABEL, detail="labelled by a script")
    assert b"labelled by a script" in viewer_client.get(url).content


def test_the_live_rows_answer_304_when_nothing_changed(viewer_client, db):
    running = add("batch_live", status="in_progress")
    url = reverse("batch-rows-live") + f"?ids={running.pk}:in_progress"
    first = viewer_client.get(url, HTTP_HX_REQUEST="true")
    assert first.status_code == 200 and first["ETag"]
    assert "no-cache" in first["Cache-Control"] and "private" in first["Cache-Control"]
    again = viewer_client.get(url, HTTP_HX_REQUEST="true", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and again.content == b""
    Batch.objects.filter(pk=running.pk).update(request_completed=7)
    changed = viewer_client.get(url, HTTP_HX_REQUEST="true", HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200 and drawn(changed)


@pytest.mark.real_commits
@pytest.mark.django_db(transaction=True)
def test_the_generation_rises_once_per_transaction_after_it_commits():
    User.objects.create_user("gen")  # the roles' groups and the default connection exist
    before = generation.current()
    with transaction.atomic():
        add("batch_a", status="in_progress")
        add("batch_b", status="in_progress")
        Batch.objects.filter(openai_id="batch_a").update(label="x")
        assert generation.current() == before  # not before the commit
    assert generation.current() == before + 1
    try:
        with transaction.atomic():
            add("batch_c", status="in_progress")
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert generation.current() == before + 1  # nothing committed, nothing to redraw
    Batch.objects.filter(openai_id="batch_a").update(label="y")  # autocommit: at once
    assert generation.current() == before + 2


def test_the_freshness_line_is_never_served_stale(viewer_client, one):
    """A sync pass writes the connection's sync state, not batches: the page keeps its cached
    body, and its frame (the freshness line) is drawn again."""
    from batches.models import SyncState, default_connection

    assert b"Not synced with upstream yet" in viewer_client.get(LIST).content
    SyncState.objects.update_or_create(
        connection=default_connection(), defaults={"last_success_at": timezone.now()}
    )
    page = viewer_client.get(LIST)
    assert b"Data synced" in page.content and b"just now" in page.content
    assert "batches/framed.html" in {t.name for t in page.templates}
    assert not drawn(page)  # the body came from the cache


def test_a_message_is_shown_on_a_page_served_from_the_cache(operator_client, operator, one):
    operator_client.get(LIST)
    operator_client.post(reverse("batch-sync"), {"next": LIST})  # leaves a message
    page = operator_client.get(LIST)
    assert b'class="messages"' in page.content
    assert b'class="messages"' not in operator_client.get(LIST).content  # shown once


# --- What a page served from the cache still checks on every request -----------------------


PASSWORD_BACKEND = "batches.services.signin.PasswordBackend"  # what a password sign-in uses


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user, backend=PASSWORD_BACKEND)
    assert client.get(LIST).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert client.get(LIST).status_code == 200
    # The person came from the cache: no read of the users' table.
    assert not any('"auth_user"' in q["sql"] for q in captured.captured_queries)
    return client


def test_a_person_deactivated_is_signed_out_at_once(viewer, one):
    client = signed_in(viewer)
    viewer.is_active = False
    viewer.save()
    assert client.get(LIST).status_code == 302


def test_a_new_password_ends_the_other_sessions_at_once(viewer, one):
    client = signed_in(viewer)
    viewer.set_password("a-new-password-for-vic")
    viewer.save()
    assert client.get(LIST).status_code == 302


def test_a_deleted_person_is_signed_out_at_once(viewer, one):
    client = signed_in(viewer)
    viewer.delete()
    assert client.get(LIST).status_code == 302


def test_an_expired_session_is_refused(viewer_client, one):
    from django.contrib.sessions.models import Session

    assert viewer_client.get(LIST).status_code == 200
    Session.objects.update(expire_date=timezone.now() - dt.timedelta(seconds=1))
    assert viewer_client.get(LIST).status_code == 302


def test_a_deleted_batch_page_is_gone_at_once(viewer_client, one):
    url = one.get_absolute_url()
    assert viewer_client.get(url).status_code == 200
    one.delete()
    assert viewer_client.get(url).status_code == 404


def test_no_template_comment_reaches_a_page(viewer_client, one):
    """Django's {# #} comments end at the line's end: one spread over two lines is shown."""
    for url in (LIST, one.get_absolute_url()):
        page = viewer_client.get(url).content
        assert b"{#" not in page and b"{%" not in page, url


def test_every_template_comment_opens_and_closes_on_one_line():
    from pathlib import Path

    from django.conf import settings

    open_ended = [
        f"{path}:{number}"
        for folder in settings.TEMPLATES[0]["DIRS"]
        for path in Path(folder).rglob("*.html")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "{#" in line and "#}" not in line[line.index("{#") :]
    ]
    assert not open_ended, open_ended


def test_a_body_drawn_in_a_kept_frame_reads_the_sync_states_once(viewer_client, one):
    """The freshness line's sync states are read for the page's key; the frame's own read of
    them (the context processor) waits until a frame is drawn."""
    viewer_client.get(LIST)
    with CaptureQueriesContext(connection) as queries:
        response = viewer_client.get(LIST, {"q": "batch"})
    assert drawn(response) and frames_drawn(response) == 0
    assert sum("syncstate" in q["sql"] for q in queries.captured_queries) == 1


@pytest.mark.parametrize(
    "backend",
    ["batches.services.signin.PasswordBackend", "batches.services.signin.CompanyBackend"],
)
def test_the_person_of_a_session_is_kept_whichever_way_they_signed_in(viewer, one, backend):
    """KeptUsers serves the session's person from the cache for password and company sign-ins
    alike (no query of auth_user on a page served from the cache), and a deactivation still
    signs them out at once."""
    client = Client()
    client.force_login(viewer, backend=backend)
    client.get(LIST)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(LIST).status_code == 200
    assert not [q for q in queries.captured_queries if '"auth_user"' in q["sql"]]
    viewer.is_active = False
    viewer.save()
    assert client.get(LIST).status_code == 302
