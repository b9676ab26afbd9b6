"""The one reader of "what may this person see" (models/connections.py,
`Connection.objects.visible_to`, and the query sets and lookups built on it): who sees which
connection and its batches, the dormant default connection, strangers, 404 for the rest, the
per-process cache of the answer, and no second reader coming back in the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import connection as db
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from batches.models import (
    DEFAULT_SLUG,
    Batch,
    BatchTally,
    Connection,
    ListFilters,
    default_connection,
)
from batches.roles import ADMINS
from batches.services.batches import batch_upsert
from batches.views.lookups import batch_for, batch_state_for, connection_for
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def fresh(user: User) -> User:
    """The same person as a new request sees them: nothing kept on the object."""
    return User.objects.get(pk=user.pk)


def person(name: str, *groups: str) -> User:
    user = User.objects.create_user(name, password=f"pw-{name}-123")
    user.groups.add(Group.objects.get(name="Viewers"), *Group.objects.filter(name__in=groups))
    return user


@pytest.fixture
def world(research, admin_user) -> dict:
    """The default connection (open), Research (restricted to its group), Legacy (restricted
    once, its group since deleted), a batch on each, and the people who look at them."""
    legacy = Connection.objects.create(
        name="Legacy", slug="legacy", base_url="https://legacy.example.test/v1", key_env="L"
    )
    gone = Group.objects.create(name="Gone")
    legacy.groups.add(gone)
    gone.delete()  # a cascade: no signal, the restriction stays
    batches = {
        slug: batch_upsert(
            payload=make_batch(id=f"batch_{slug}", status="completed"),
            connection=Connection.objects.get(slug=slug),
        ).batch
        for slug in (DEFAULT_SLUG, "research", "legacy")
    }
    return {
        "batches": batches,
        "superuser": admin_user,
        "member": person("rita", "Research"),
        "outsider": person("otto"),
        "admin": person("ada", ADMINS),
    }


def slugs(user) -> set[str]:
    return {c.slug for c in Connection.objects.visible_to(user)}


def batch_slugs(user, **kwargs) -> set[str]:
    return {b.connection.slug for b in Batch.objects.visible_to(user, **kwargs).for_list()}


# --- Who sees what ---------------------------------------------------------------------------


def test_a_superuser_sees_every_connection_and_every_batch(world):
    user = fresh(world["superuser"])
    access = Connection.objects.visible_to(user)
    assert slugs(user) == {DEFAULT_SLUG, "research", "legacy"}
    assert access.everything and access.admin
    assert batch_slugs(user) == {DEFAULT_SLUG, "research", "legacy"}
    # Seeing everything adds no condition to the batches' query: the indexes serve it.
    assert "WHERE" not in str(Batch.objects.visible_to(user).query)


def test_a_member_of_a_restricted_connection_s_group_sees_it(world):
    user = fresh(world["member"])
    assert slugs(user) == {DEFAULT_SLUG, "research"}
    assert batch_slugs(user) == {DEFAULT_SLUG, "research"}
    assert {t.connection_id for t in BatchTally.objects.visible_to(user)} == {
        c.pk for c in Connection.objects.visible_to(user)
    }
    access = Connection.objects.visible_to(user)
    assert not access.everything and not access.admin
    assert Connection.objects.get(slug="research") in access
    assert Connection.objects.get(slug="legacy") not in access


def test_someone_outside_the_group_sees_neither_the_connection_nor_its_batches(world):
    user = fresh(world["outsider"])
    assert slugs(user) == {DEFAULT_SLUG}
    assert batch_slugs(user) == {DEFAULT_SLUG}
    assert batch_slugs(user, connection="research") == set()
    assert not BatchTally.objects.visible_to(user, connection="research").exists()
    assert Connection.objects.visible_to(user).get("research") is None
    assert Connection.objects.visible_to(user).connection_ids("research") == []


def test_a_restriction_whose_groups_are_gone_leaves_it_to_admins(world):
    legacy = Connection.objects.get(slug="legacy")
    assert legacy.restricted and not legacy.groups.exists()
    assert "legacy" not in slugs(fresh(world["outsider"]))
    assert "legacy" not in slugs(fresh(world["member"]))
    assert "legacy" in slugs(fresh(world["admin"]))
    assert "legacy" in slugs(fresh(world["superuser"]))
    assert Connection.objects.visible_to(fresh(world["admin"])).admin


def test_a_stranger_sees_nothing(world):
    stranger = AnonymousUser()
    access = Connection.objects.visible_to(stranger)
    assert list(access) == [] and not access.everything and not access.admin
    assert not Batch.objects.visible_to(stranger).exists()
    assert not BatchTally.objects.visible_to(stranger).exists()
    assert Connection.objects.listed_to(stranger) == []
    with pytest.raises(Http404):
        batch_for(stranger, DEFAULT_SLUG, "batch_default")


def test_the_dormant_default_connection_is_seen_but_not_listed(world, settings):
    """The connection of the environment, without OPENAI_API_KEY and without batches: its
    page answers (visible_to), but no menu, filter or freshness line lists it."""
    settings.OPENAI_API_KEY = ""
    world["batches"][DEFAULT_SLUG].delete()
    BatchTally.rebuild()
    user = fresh(world["member"])
    assert DEFAULT_SLUG in slugs(user)
    assert DEFAULT_SLUG not in {c.slug for c in Connection.objects.listed_to(user)}
    # With a batch it has something to show, and is listed again.
    batch_upsert(payload=make_batch(id="batch_new"), connection=default_connection())
    assert DEFAULT_SLUG in {c.slug for c in Connection.objects.listed_to(fresh(user))}
    # With a key it is never dormant.
    settings.OPENAI_API_KEY = "sk-test"
    Batch.objects.filter(connection=default_connection()).delete()
    BatchTally.rebuild()
    assert DEFAULT_SLUG in {c.slug for c in Connection.objects.listed_to(fresh(user))}


def test_usable_connections_are_enabled_and_have_a_key(world, monkeypatch):
    user = fresh(world["member"])
    assert "research" not in {c.slug for c in Connection.objects.listed_to(user, usable=True)}
    monkeypatch.setenv("RESEARCH_KEY", "sk-research")
    assert "research" in {c.slug for c in Connection.objects.listed_to(user, usable=True)}
    Connection.objects.filter(slug="research").update(enabled=False)
    assert "research" not in {
        c.slug for c in Connection.objects.listed_to(fresh(user), usable=True)
    }


# --- Lookups: 404 for what one may not see, as for what does not exist -------------------------


def test_the_lookups_answer_404_alike_for_hidden_and_missing(world):
    outsider, member = fresh(world["outsider"]), fresh(world["member"])
    assert batch_for(member, "research", "batch_research").connection.slug == "research"
    assert connection_for(member, "research").slug == "research"
    for lookup in (
        lambda: batch_for(outsider, "research", "batch_research"),
        lambda: batch_for(outsider, "research", "batch_missing"),
        lambda: batch_for(outsider, "missing", "batch_research"),
        lambda: batch_state_for(outsider, "research", "batch_research"),
        lambda: connection_for(outsider, "research"),
        lambda: connection_for(outsider, "missing"),
    ):
        with pytest.raises(Http404):
            lookup()


def test_a_hidden_connection_s_pages_are_404_never_403(client, world):
    client.force_login(world["outsider"])
    secret = world["batches"]["research"]
    for url in (
        reverse("connection-detail", args=["research"]),
        secret.get_absolute_url(),
        secret.url("batch-results"),
    ):
        assert client.get(url).status_code == 404, url
    listed = client.get(reverse("batch-list") + "?connection=research")
    assert listed.status_code == 200 and list(listed.context["batches"]) == []


def test_a_lookup_reads_the_batch_in_one_query_and_a_hidden_slug_in_none(world):
    member = fresh(world["member"])
    Connection.objects.visible_to(member)  # the answer, kept for the request
    with CaptureQueriesContext(db) as captured:
        batch = batch_for(member, "research", "batch_research")
        assert batch.connection.slug == "research"
    assert len(captured) == 1
    with CaptureQueriesContext(db) as captured, pytest.raises(Http404):
        batch_for(member, "legacy", "batch_legacy")
    assert len(captured) == 0


# --- The answer is kept ---------------------------------------------------------------------


def test_the_answer_is_kept_for_the_request_and_the_cache_generation(world):
    member = fresh(world["member"])
    first = Connection.objects.visible_to(member)
    with CaptureQueriesContext(db) as captured:
        assert Connection.objects.visible_to(member) is first
    assert len(captured) == 0
    # Another request of the same person: from the people cache (the generation is read).
    again = fresh(member)
    with CaptureQueriesContext(db) as captured:
        assert Connection.objects.visible_to(again) == first
    assert not any("batches_connection" in q["sql"] for q in captured.captured_queries)
    # A change to groups raises the generation: the next request gets the new answer.
    world["member"].groups.remove(Group.objects.get(name="Research"))
    assert "research" not in slugs(fresh(member))


# --- The list's query sets follow the reader ------------------------------------------------


def test_the_list_counts_what_the_rows_show_with_every_filter(world, viewer):
    """The tabs' counts (tallies or rows) agree with the rows, label and search included."""
    for n, label in enumerate(["alpha", "alpha", "beta"]):
        batch = batch_upsert(
            payload=make_batch(id=f"batch_l{n}", status="completed", model="gpt-4o-mini")
        ).batch
        Batch.objects.filter(pk=batch.pk).update(label=label, search_text=f"batch_l{n} {label}")
    user = fresh(world["member"])
    for filters in (
        ListFilters(),
        ListFilters(label="alpha"),
        ListFilters(q="batch_l"),
        ListFilters(model="gpt-4o-mini", connection=DEFAULT_SLUG),
        ListFilters(connection="research"),
        ListFilters(connection="legacy"),  # not theirs: nothing
        ListFilters(creator="nobody"),
    ):
        rows = Batch.objects.listed(user, filters)
        counted = Batch.objects.tab_counts(user, filters)
        assert sum(counted.values()) == rows.count(), filters
        assert counted == rows.status_counts(), filters


def test_keyset_pages_walk_every_visible_row_once(world):
    for n in range(7):
        batch_upsert(payload=make_batch(id=f"batch_k{n}", created_at=1_700_000_000 + n // 2))
    user = fresh(world["member"])
    rows = Batch.objects.listed(user, ListFilters())
    seen, after = [], None
    while True:
        page = rows.keyset_page(after=after, before=None, size=3)
        seen += [b.pk for b in page.batches]
        if page.older is None:
            break
        after = page.older
    assert seen == list(rows.order_by("-created_at", "-id").values_list("pk", flat=True))
    back = rows.keyset_page(after=None, before=seen[3], size=3)
    assert [b.pk for b in back.batches] == seen[:3] and back.newer is None


# --- No second reader -----------------------------------------------------------------------

# The wrappers issue 20 replaced, and the rule's private parts: none may come back outside the
# reader's module (models/connections.py).
RETIRED = {
    r"\bis_visible_to\(": "Connection.is_visible_to: `connection in ...visible_to(user)`",
    r"\bconnections_for\(": "services.connections_for: Connection.objects.listed_to",
    r"\bconnection_pick\(": "api/auth.connection_pick: the reader's get(slug) / listed_to",
    r"\baccess_for\(": "access_for: Connection.objects.visible_to",
    r"\b_Scope\b": "views.batches._Scope: Batch.objects.listed / BatchTally.objects.visible_to",
    r"services\.connection_for\b|connection_services\.connection_for\b": (
        "services.connection_for: views/lookups.connection_for"
    ),
}
READER_ONLY = [r"\b_access_now\b", r"\b_sees\(", r"_batchweb_access\b", r"_batchweb_connections\b"]
READER = Path("batches/models/connections.py")


def sources() -> list[Path]:
    return sorted(
        path
        for folder in ("batches", "api", "batchweb")
        for path in (ROOT / folder).rglob("*.py")
        if "migrations" not in path.parts
    )


def test_no_retired_reader_comes_back():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {why}"
        for path in sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for pattern, why in RETIRED.items()
        if re.search(pattern, line)
    ]
    assert found == [], "\n".join(found)


def test_the_rule_is_read_only_through_the_reader():
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sources()
        if path.relative_to(ROOT) != READER
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(re.search(pattern, line) for pattern in READER_ONLY)
    ]
    assert found == [], found


def test_slugs_are_matched_against_what_one_sees_only_in_the_reader():
    """Finding a connection by slug among a person's connections (`c.slug == slug`) is
    `Access.get`; a view or service doing it again would be a second reader."""
    pattern = re.compile(r"for c in .*(visible_to|listed_to|access)\b.*if c\.slug ==")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sources()
        if path.relative_to(ROOT) != READER
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == [], found
