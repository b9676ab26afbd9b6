"""What keeps GET /v1/batches cheap (issue 14) without changing what it answers: the reads of
api/reads.py (token, connection, cached page) give what the ORM's queries gave, the number of
queries is fixed, the token's last use is written at most once a minute, and the API's reads
keep one upstream session per thread and connection."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
import requests
from django.contrib.auth.models import Group, User
from django.db import connection as db
from django.db.models import Q
from django.forms.models import model_to_dict
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from api import reads
from api.auth import token_rule
from api.models import ApiToken
from api.services import batches as api_batches
from api.services.tokens import token_authenticate, token_create
from batches import roles
from batches.models import Batch, Connection

pytestmark = pytest.mark.django_db

DOWN = "http://127.0.0.1:9"  # the connections' upstream: refused in these tests


def bearer(plain: str) -> str:
    return f"Bearer {plain}"


@pytest.fixture
def conns(db) -> list[Connection]:
    """Three connections: open to all, limited to Research, limited to Ops (disabled)."""
    research, ops = Group.objects.create(name="Research"), Group.objects.create(name="Ops")
    made = [
        Connection.objects.create(
            name=f"Speed {i}", slug=f"speed-{i}", base_url=DOWN, key_env="SPEED_KEY"
        )
        for i in range(3)
    ]
    made[1].groups.add(research)
    made[2].groups.add(ops)
    made[2].enabled = False
    made[2].save()
    return made


@pytest.fixture
def people(conns, admin_user) -> dict[str, User]:
    """Who sees what: a superuser, a member of Research, someone in no connection group, and
    someone in both groups."""
    viewers = Group.objects.get(name="Viewers")
    found = {"admin": admin_user}
    for name, groups in (("member", ["Research"]), ("outsider", []), ("both", ["Research", "Ops"])):
        user = User.objects.create_user(f"speed-{name}", password="pw-speed-123")
        user.groups.add(viewers, *Group.objects.filter(name__in=groups))
        found[name] = user
    return found


def fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)  # nothing kept on the object from an earlier request


def fill(connection: Connection, count: int, *, tied: int = 0) -> None:
    """`count` batches on `connection`; the first `tied` share one created_at (so the id breaks
    the tie)."""
    now = timezone.now().replace(microsecond=0)
    Batch.objects.bulk_create(
        Batch(
            connection=connection,
            openai_id=f"batch_{connection.slug}_{i:03d}",
            status="completed",
            endpoint="/v1/chat/completions",
            created_at=now - dt.timedelta(seconds=0 if i < tied else i),
            raw={"id": f"batch_{connection.slug}_{i:03d}", "object": "batch", "n": i, "ü": "é"},
            synced_at=now,
        )
        for i in range(count)
    )


def orm_page(connection: Connection, after: str | None, limit: int) -> list:
    """The cached page as the ORM query (the code before issue 14's work) read it."""
    rows = Batch.objects.filter(connection=connection).order_by("-created_at", "-id")
    if after:
        anchor = rows.filter(openai_id=after).values("created_at", "id").first()
        if anchor is None:
            return []
        rows = rows.filter(
            Q(created_at__lt=anchor["created_at"])
            | Q(created_at=anchor["created_at"], id__lt=anchor["id"])
        )
    return list(rows.values_list("raw", flat=True)[:limit])


# --- The reads give what the ORM gave -----------------------------------------------------------


def test_the_token_read_gives_the_same_token_and_owner_as_the_orm(submitter):
    made = token_create(user=submitter, name="ci", scope="submit", days=30)
    ApiToken.objects.filter(pk=made.token.pk).update(last_used_at=timezone.now())

    mine = reads.token_by_prefix(made.token.prefix)
    orm = ApiToken.objects.select_related("user").get(prefix=made.token.prefix)

    assert model_to_dict(mine) == model_to_dict(orm)
    assert mine.expires_at.tzinfo is not None and mine.last_used_at == orm.last_used_at
    assert model_to_dict(mine.user) == model_to_dict(orm.user)
    assert mine.user.has_perm("batches.submit_batch") and mine.user.is_active
    assert mine.pk == orm.pk and not mine._state.adding
    assert reads.token_by_prefix("0" * 8) is None


def picked(user: User, slug: str | None) -> tuple[object, User | None]:
    """What `@token_rule` makes of a request by `user` naming `slug` in the connection header
    (None: no header): the connection's slug, or the refusal; and the request's user."""
    plain = token_create(user=user, name="pick", scope="read", days=30).plain
    seen: dict[str, User] = {}

    @token_rule(roles.VIEW)
    def view(request):
        seen["user"] = request.user
        return HttpResponse(request.connection.slug)

    headers = {"HTTP_AUTHORIZATION": bearer(plain)}
    if slug is not None:
        headers["HTTP_X_BATCHWEB_CONNECTION"] = slug
    response = view(RequestFactory().get("/v1/batches", **headers))
    if response.status_code != 200:
        return (response.status_code, json.loads(response.content)["error"]), seen.get("user")
    return response.content.decode(), seen["user"]


def test_the_connection_header_refuses_and_chooses_as_before(people, conns, monkeypatch):
    monkeypatch.setenv("SPEED_KEY", "sk-speed")
    (status, error), _ = picked(people["outsider"], conns[1].slug)
    assert (status, error["code"]) == (403, "connection_forbidden")
    assert "“speed-1”" in error["message"]
    (status, error), _ = picked(people["both"], conns[2].slug)
    assert (status, error["code"]) == (403, "connection_disabled")
    assert picked(people["member"], f" {conns[1].slug} ")[0] == conns[1].slug
    # No header: the default connection (or the only usable one), from the same answer as
    # Connection.objects.listed_to reads, kept on the request's user.
    usable = Connection.objects.listed_to(fresh(people["member"]), usable=True)
    expected = next((c for c in usable if c.slug == "default"), None) or usable[0]
    slug, user = picked(people["member"], None)
    assert slug == expected.slug
    assert user._batchweb_access == Connection.objects.visible_to(fresh(people["member"]))
    assert [c.pk for c in Connection.objects.listed_to(user)] == [
        c.pk for c in Connection.objects.listed_to(fresh(people["member"]))
    ]


@pytest.mark.parametrize("limit", [1, 7, 20, 100])
def test_the_cached_page_read_gives_the_orm_pages_in_the_same_order(conns, limit):
    fill(conns[0], 45, tied=6)
    fill(conns[1], 5)

    after, pages = None, 0
    while True:
        mine = reads.cached_payloads(connection_id=conns[0].pk, after=after, limit=limit + 1)
        assert mine == orm_page(conns[0], after, limit + 1)
        page = api_batches.cached_page(connection=conns[0], after=after, limit=limit)
        pages += 1
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert pages == -(-45 // limit)
    # An unknown id, or another connection's, starts nothing (as before).
    assert reads.cached_payloads(connection_id=conns[0].pk, after="batch_nope", limit=5) == []
    other = "batch_speed-1_000"
    assert reads.cached_payloads(connection_id=conns[0].pk, after=other, limit=5) == []
    assert orm_page(conns[0], other, 5) == []


def test_a_deep_page_starts_at_its_anchor_in_the_index(conns):
    if db.vendor != "sqlite":
        pytest.skip("reads SQLite's query plan")
    sql = reads._page_sql(after=True).replace("%s", "?")
    with db.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", [conns[0].pk, "batch_x", conns[0].pk, 21])
        plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
    # A range from the anchor down, not a walk over every newer batch of the connection.
    assert "batch_connection_newest (connection_id=? AND created_at<?)" in plan, plan


# --- Through the API ----------------------------------------------------------------------------


@pytest.fixture
def down(no_network, settings, monkeypatch):
    settings.OPENAI_MAX_RETRIES = 0
    monkeypatch.setenv("SPEED_KEY", "sk-speed")
    no_network.add("GET", f"{DOWN}/batches", body=requests.ConnectionError("refused"))
    return no_network


def listing(client, plain: str, query: str = "", **headers: str):
    return client.get(
        reverse("api-batches") + query,
        HTTP_AUTHORIZATION=bearer(plain),
        HTTP_X_BATCHWEB_CONNECTION="speed-0",
        **headers,
    )


def test_the_list_from_the_cache_answers_the_same_body_as_the_orm_page(client, down, conns, people):
    fill(conns[0], 30, tied=4)
    plain = token_create(user=people["member"], name="s", scope="read", days=30).plain

    first = listing(client, plain, "?limit=10")
    second = listing(client, plain, f"?limit=10&after={first.json()['last_id']}")

    for response, after in ((first, None), (second, first.json()["last_id"])):
        assert response.status_code == 200, response.content
        assert response["X-Batchweb-Source"] == "cache"
        data = orm_page(conns[0], after, 11)
        assert response.json() == {
            "object": "list",
            "data": data[:10],
            "first_id": data[0]["id"],
            "last_id": data[9]["id"],
            "has_more": True,
        }


def test_the_list_makes_as_many_queries_whatever_the_cache_holds(client, down, conns, people):
    plain = token_create(user=people["member"], name="s", scope="read", days=30).plain
    counts = []
    for size in (0, 5, 80):
        Batch.objects.all().delete()
        fill(conns[0], size)
        listing(client, plain)  # the first request fills per-process caches (permissions)
        with CaptureQueriesContext(db) as captured:
            response = listing(client, plain, "?limit=50")
        assert response.status_code == 200
        assert len(response.json()["data"]) == min(size, 50)
        counts.append(len(captured))
        statements = [q["sql"].lstrip().upper() for q in captured]
        # Reads only: no write of the token's last use, no audit entry.
        assert all(sql.startswith("SELECT") for sql in statements), statements
        # The API's own: the token with its owner and the page, each once; the connections
        # the owner may use come from the cache (kept per cache generation, see
        # Connection.objects.visible_to).
        for table in ("API_APITOKEN", "BATCHES_BATCH"):
            assert sum(f'FROM "{table}"' in sql for sql in statements) == 1, (table, statements)
        assert not any('FROM "BATCHES_CONNECTION"' in sql for sql in statements), statements
    assert counts[0] == counts[1] == counts[2]


def test_a_token_used_again_within_a_minute_writes_nothing(client, down, conns, people):
    made = token_create(user=people["member"], name="s", scope="read", days=30)
    assert listing(client, made.plain).status_code == 200
    first = ApiToken.objects.get(pk=made.token.pk).last_used_at
    assert first is not None

    with CaptureQueriesContext(db) as captured:
        assert listing(client, made.plain).status_code == 200
    assert not [q for q in captured if q["sql"].lstrip().upper().startswith("UPDATE")]
    assert ApiToken.objects.get(pk=made.token.pk).last_used_at == first

    # A minute later the next call notes it again: one UPDATE.
    ApiToken.objects.filter(pk=made.token.pk).update(last_used_at=first - dt.timedelta(minutes=1))
    with CaptureQueriesContext(db) as captured:
        assert listing(client, made.plain).status_code == 200
    assert len([q for q in captured if q["sql"].lstrip().upper().startswith("UPDATE")]) == 1
    assert ApiToken.objects.get(pk=made.token.pk).last_used_at > first


def test_the_throttle_boundary_is_one_minute(submitter):
    made = token_create(user=submitter, name="ci", scope="read", days=7)
    start = timezone.now()
    token_authenticate(bearer(made.plain), now=start)
    with CaptureQueriesContext(db) as captured:
        token_authenticate(bearer(made.plain), now=start + dt.timedelta(seconds=59))
    assert len(captured) == 1  # the read alone
    with CaptureQueriesContext(db) as captured:
        token_authenticate(bearer(made.plain), now=start + dt.timedelta(seconds=60))
    assert len(captured) == 2  # the read and the write
    assert ApiToken.objects.get().last_used_at == start + dt.timedelta(seconds=60)


def test_refusals_are_unchanged_for_a_revoked_or_unknown_token(client, down, conns, people):
    from api.services.tokens import token_revoke

    made = token_create(user=people["member"], name="s", scope="read", days=30)
    token_revoke(token=made.token, by=people["member"])
    response = listing(client, made.plain)
    assert response.status_code == 401 and response.json()["error"]["code"] == "revoked_api_key"
    unknown = "bw_0123abcd_" + "x" * 43
    response = listing(client, unknown)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    outsider = token_create(user=people["outsider"], name="o", scope="read", days=30).plain
    response = client.get(
        reverse("api-batches"),
        HTTP_AUTHORIZATION=bearer(outsider),
        HTTP_X_BATCHWEB_CONNECTION="speed-1",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "connection_forbidden"


# --- One upstream session per thread and connection ---------------------------------------------


def test_the_api_reads_keep_one_session_per_thread_and_connection(conns, monkeypatch):
    monkeypatch.setenv("SPEED_KEY", "sk-speed")
    first = api_batches._reader(conns[0])
    again = api_batches._reader(conns[0])
    other = api_batches._reader(conns[1])
    assert first is not again and first.session is again.session  # new config, same pool
    assert other.session is not first.session
    assert again.config.api_key == "sk-speed" and again.config.base_url == DOWN

    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(api_batches._reader(conns[0])))
    thread.start()
    thread.join()
    assert elsewhere[0].session is not first.session


def test_after_an_unreachable_upstream_the_reads_rest_for_a_few_seconds(
    client, down, conns, people, monkeypatch
):
    """A script paging through an outage: the first call finds upstream unreachable, the next
    ones within UPSTREAM_REST_SECONDS answer from the cache without asking it; then it is
    asked again."""
    from api.services import batches as api_batches

    fill(conns[0], 3)
    plain = token_create(user=people["admin"], name="rest", scope="read", days=30).plain
    asked = lambda: sum(c.request.url.startswith(f"{DOWN}/batches") for c in down.calls)  # noqa: E731
    first = listing(client, plain)
    assert first["X-Batchweb-Source"] == "cache" and asked() == 1
    again = listing(client, plain)
    assert again["X-Batchweb-Source"] == "cache" and again.json() == first.json()
    assert asked() == 1  # not asked: resting
    later = time.monotonic() + api_batches.UPSTREAM_REST_SECONDS + 0.1
    monkeypatch.setattr(api_batches.time, "monotonic", lambda: later)
    assert listing(client, plain)["X-Batchweb-Source"] == "cache"
    assert asked() == 2  # asked again after the rest
