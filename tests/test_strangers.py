"""Nothing durable from strangers (issue 19): every URL of the project, asked by someone who is
not signed in, with or without a CSRF token, with junk bodies, a made-up API token and badly
signed webhooks, writes no row in any table and leaves the cache generation alone, except what
is designed and bounded (DESIGNED, each bound checked below).

The URLs come from a walk of the URLconf, and each path parameter is filled with a value its
converter accepts (an existing connection's slug, an existing batch's id, made-up tokens), so a
new view is covered without editing this file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import models
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve, reverse
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern

from api.services.tokens import token_create, token_revoke
from batches.cache import generations as generation
from batches.models import (
    Batch,
    Connection,
    Event,
    Submission,
    WebhookDelivery,
    WebhookRefusals,
)
from batches.services.batches import batch_upsert
from tests.conftest import make_batch
from tests.webhook_vectors import OTHER_SECRET, SECRET, event_body, signed_headers

pytestmark = pytest.mark.django_db

# What a stranger may write, each with its bound (checked by the tests at the end):
# - django-axes' failed-attempt rows: one per name, address and browser, at most
#   AXES_FAILURE_LIMIT per address before the address is locked;
# - failed sign-ins in the audit trail: at most AXES_FAILURE_LIMIT + 2 per address and lockout
#   (the failures, the lockout, the first attempt refused during it);
# - the refused-webhook counter: one row per connection, updated in place.
DESIGNED_TABLES = {"axes.accessattempt", "axes.accessattemptexpiration", "batches.webhookrefusals"}


def designed_row(model: type[models.Model], row: dict[str, Any]) -> bool:
    return model is Event and row["action"] == Event.Action.SIGN_IN_FAILED


# --- The walk ----------------------------------------------------------------------------------

MADE_UP_TOKEN = "bw_0123abcd_" + "x" * 43
# Values tried for a path parameter, by name first, then for any name; the first one its
# converter accepts is used. `slug` takes every connection's, and one of no connection.
BY_NAME = {
    "slug": ["default", "research", "quiet", "no-such-connection"],
    "openai_id": ["batch_strangers", "batch_unknown"],
    "batch_id": ["batch_strangers", "batch_unknown"],
    "file_id": ["file-strangers"],
    "token": ["tok-strangers", "c2lnbmVk:1abc:c2lnbmF0dXJl"],
    "row_id": ["1"],
    "token_id": ["1"],
    "kind": ["output"],
    "rest": ["results/", "files"],
    "object_id": ["1"],
    "app_label": ["batches", "auth", "api", "axes"],
}
ANY = ["1", "sample_1", "sample-1", "a1:b2:c3", "x"]


@dataclass(frozen=True)
class Route:
    name: str
    template: str  # the full route, `<converter:name>` for parameters
    urls: tuple[str, ...]

    def __str__(self) -> str:
        return self.name


def _fill(template: str, value_for: dict[str, str]) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value_for[m.group(1)], template)


def _choices(name: str, regex: str) -> list[str]:
    """The values to try for one parameter: every named one its converter accepts for `slug`,
    else the first that fits."""
    named = [v for v in BY_NAME.get(name, []) if re.fullmatch(regex, v)]
    if name == "slug" and named:
        return named
    return [v for v in [*named, *ANY] if re.fullmatch(regex, v)][:1]


def _regex_as_route(regex: str) -> tuple[str, dict[str, str]]:
    """An admin-site `re_path` as a route: each named group becomes `<name>`, taking values its
    own regex accepts."""
    groups: dict[str, str] = {}

    def group(match: re.Match) -> str:
        groups[match.group(1)] = match.group(2)
        return f"<{match.group(1)}>"

    route = re.sub(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)", group, regex)
    return route.removeprefix("^").removesuffix("$").removesuffix("\\Z").replace("\\", ""), groups


def walk() -> list[Route]:
    found: list[Route] = []

    def visit(patterns: list, prefix: str, regexes: dict[str, str]) -> None:
        for p in patterns:
            if isinstance(p.pattern, RegexPattern):
                piece, groups = _regex_as_route(p.pattern._regex)
            else:
                piece = str(p.pattern)
                groups = {n: c.regex for n, c in p.pattern.converters.items()}
            route, known = prefix + piece, {**regexes, **groups}
            if isinstance(p, URLResolver):
                visit(p.url_patterns, route, known)
                continue
            options = {
                n: _choices(n, known.get(n, r"[^/]+"))
                for n in re.findall(r"<(?:\w+:)?(\w+)>", route)
            }
            if not all(options.values()):
                found.append(Route(p.name or route, route, ("MISSING",)))
                continue
            first = {n: v[0] for n, v in options.items()}
            urls = [_fill(route, {**first, "slug": slug}) for slug in options.get("slug", [])]
            found.append(Route(p.name or route, route, tuple(urls or [_fill(route, first)])))

    visit(get_resolver().url_patterns, "", {})
    return found


ROUTES = walk()
LOGIN = reverse("login")


def test_the_walk_finds_every_url_and_fills_each_so_it_resolves():
    names = {r.name for r in ROUTES}
    assert {"login", "openai-webhook", "api-batches", "batch-detail", "activity"} <= names
    assert any(r.template.startswith("admin/") for r in ROUTES)
    unfilled = [r.template for r in ROUTES if r.urls == ("MISSING",)]
    assert not unfilled, f"add a value for these parameters to BY_NAME: {unfilled}"
    unresolved = []
    for route in ROUTES:
        for url in route.urls:
            try:
                resolve(url.split("?")[0])
            except Resolver404:
                unresolved.append(url)
    assert not unresolved


# --- The world and what may change ------------------------------------------------------------


@pytest.fixture
def world(db, settings) -> dict[str, Any]:
    """Connections with and without a webhook secret (one restricted), a batch, a person with
    a token, a pending submission."""
    settings.OPENAI_WEBHOOK_SECRET = SECRET
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()
    research = Connection(name="Research", slug="research", base_url="https://r.example.test/v1")
    research.set_key("sk-research-key-1234")
    research.set_webhook_secret(SECRET)
    research.save()
    research.groups.add(Group.objects.create(name="Research"))
    Connection.objects.create(name="Quiet", slug="quiet", base_url="https://q.example.test/v1")
    owner = User.objects.create_user("owen", password="pw-owen-123")
    owner.groups.add(Group.objects.get(name="Submitters"))
    batch_upsert(payload=make_batch(id="batch_strangers", status="in_progress"))
    Submission.objects.create(token="tok-strangers", user=owner)
    token_create(user=owner, name="ci", scope="submit", days=7)
    return {"owner": owner}


def snapshot() -> dict[str, list[tuple]]:
    """Every row of every table (the designed ones aside), as it is."""
    rows: dict[str, list[tuple]] = {}
    for model in apps.get_models():
        label = model._meta.label_lower
        if label in DESIGNED_TABLES:
            continue
        values = model._base_manager.order_by("pk").values()
        rows[label] = [tuple(r.items()) for r in values if not designed_row(model, r)]
    return rows


def changed(before: dict, after: dict) -> dict[str, tuple[int, int]]:
    return {
        label: (len(before[label]), len(after[label]))
        for label in before
        if before[label] != after[label]
    }


def stranger_requests(url: str) -> list[tuple[str, dict[str, Any]]]:
    """What a stranger sends to one URL: (method, arguments of the test client)."""
    garbage = {"data": b"\x00\xff{junk", "content_type": "application/octet-stream"}
    form = {"username": "mallory", "password": "guess", "name": "x", "token": "x", "label": "x"}
    body = event_body("batch_strangers")
    forged = signed_headers(body, secret=OTHER_SECRET)
    stale = signed_headers(body, secret=SECRET)  # the vectors' clock: long ago
    bearer = {"Authorization": f"Bearer {MADE_UP_TOKEN}"}
    json_body = {"data": b'{"input_file_id": "file-x"}', "content_type": "application/json"}
    return [
        ("get", {}),
        ("head", {}),
        ("get", {"headers": bearer}),
        ("post", {**garbage}),
        ("post", {"data": form}),
        ("post", {"data": form, "csrf": True}),
        ("post", {**garbage, "csrf": True}),
        ("post", {**json_body, "headers": bearer}),
        ("post", {**json_body, "headers": {"Authorization": "Bearer sk-proj-not-ours"}}),
        ("delete", {"headers": bearer}),
        ("post", {"data": body, "content_type": "application/json", "headers": forged}),
        ("post", {"data": body, "content_type": "application/json", "headers": stale}),
        ("post", {"data": body, "content_type": "application/json", "headers": {}}),
    ]


def send(client: Client, csrf: str, url: str, method: str, kwargs: dict[str, Any]) -> int:
    kwargs = dict(kwargs)
    if kwargs.pop("csrf", False):
        if isinstance(kwargs.get("data"), dict):
            kwargs["data"] = {**kwargs["data"], "csrfmiddlewaretoken": csrf}
        kwargs["headers"] = {**kwargs.get("headers", {}), "X-CSRFToken": csrf}
    return getattr(client, method)(url, **kwargs).status_code


def stranger() -> tuple[Client, str]:
    """A browser that is not signed in, holding a CSRF cookie of its own."""
    client = Client(enforce_csrf_checks=True)
    client.get(LOGIN)
    return client, client.cookies[settings.CSRF_COOKIE_NAME].value


# --- The invariant -----------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_a_stranger_writes_nothing_durable_and_keeps_the_page_cache(world, route):
    client, csrf = stranger()
    for url in route.urls:
        before, generation_before = snapshot(), generation.current()

        sent = [
            f"{method.upper()} {send(client, csrf, url, method, kwargs)}"
            for method, kwargs in stranger_requests(url)
        ]

        assert changed(before, snapshot()) == {}, f"{url}: {sent}"
        assert generation.current() == generation_before, f"{url}: {sent}"


# --- The designed exceptions and their bounds ---------------------------------------------------


def test_failed_sign_ins_are_bounded_by_the_throttle_and_keep_the_page_cache(world):
    client, csrf = stranger()
    before = generation.current()

    for number in range(40):
        client.post(
            LOGIN,
            {"username": f"guess{number % 7}", "password": "x", "csrfmiddlewaretoken": csrf},
        )

    limit = settings.AXES_FAILURE_LIMIT
    attempts = apps.get_model("axes", "AccessAttempt").objects.count()
    failures = Event.objects.filter(action=Event.Action.SIGN_IN_FAILED).count()
    assert attempts <= limit
    assert failures <= limit + 2
    assert generation.current() == before


def test_refused_webhooks_are_one_counter_row_per_connection(world):
    client = Client()
    body = event_body("batch_strangers")
    before, entries = generation.current(), Event.objects.count()

    for number in range(30):
        for slug in ("default", "research", "quiet", "nobody"):
            client.post(
                f"/webhooks/openai/{slug}/",
                data=body,
                content_type="application/json",
                headers=signed_headers(body, secret=OTHER_SECRET, webhook_id=f"wh_{number}"),
            )

    counts = dict(WebhookRefusals.objects.values_list("connection__slug", "count"))
    assert counts == {"default": 30, "research": 30, "quiet": 30}
    assert not WebhookDelivery.objects.exists()
    assert Event.objects.count() == entries
    assert generation.current() == before


# --- Refusals that used to empty the page cache -------------------------------------------------


def test_a_refused_api_call_with_a_made_up_token_writes_nothing(world, client):
    before, entries = generation.current(), Event.objects.count()

    response = client.get("/v1/batches", headers={"Authorization": f"Bearer {MADE_UP_TOKEN}"})

    assert response.status_code == 401
    assert Event.objects.count() == entries
    assert generation.current() == before


def test_a_refused_api_call_of_a_known_token_is_in_the_trail_but_keeps_the_page_cache(
    world, client
):
    made = token_create(user=world["owner"], name="old", scope="read", days=7)
    token_revoke(token=made.token, by=world["owner"])
    before = generation.current()

    response = client.get("/v1/batches", headers={"Authorization": f"Bearer {made.plain}"})

    assert response.status_code == 401
    assert Event.objects.get(action=Event.Action.API_REFUSED).user == world["owner"]
    assert generation.current() == before


def test_a_failed_sign_in_keeps_the_page_cache(world, client):
    before = generation.current()

    response = client.post(LOGIN, {"username": "owen", "password": "wrong"})

    assert response.status_code == 200
    assert Event.objects.filter(action=Event.Action.SIGN_IN_FAILED).count() == 1
    assert generation.current() == before


def test_events_without_a_batch_are_on_the_activity_page_at_once(world, admin_user):
    admin = Client()
    admin.force_login(admin_user)
    assert b"mallory" not in admin.get("/activity/").content
    before = generation.current()

    Client().post(LOGIN, {"username": "mallory", "password": "wrong"})

    assert generation.current() == before  # no cached page shows it...
    assert b"mallory" in admin.get("/activity/").content  # ...and the activity page is drawn


def test_an_event_of_a_batch_still_raises_the_generation(world):
    batch = Batch.objects.get(openai_id="batch_strangers")
    before = generation.current()

    Event.record(Event.Action.LABEL, batch=batch, detail="labelled")

    assert generation.current() == before + 1
