"""Every URL of the project against every role: the server refuses what a role may not do,
whatever a page showed. The URLs come from a walk of the URLconf, so a new one is covered
without editing this file; each view's rule is read from its `@rule(...)` decorator."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from batches.models import Batch, Connection, Submission, default_connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db

# URLs with no sign-in: the sign-in pages (password and company), the signed webhook, static
# files, the /v1/ API's OpenAPI document, the health check (/healthz).
PUBLIC = {"login", "oidc-sign-in", "oidc-callback", "openai-webhook", "api-openapi", "healthz"}
# Django's own (the admin site has its own permission checks, tested in the admin tests).
SKIPPED_PREFIXES = ("admin/",)
ROLES = ["nobody", "Viewers", "Submitters", "Operators", "Admins"]
SAMPLE = {
    "slug": "default",
    "openai_id": "batch_roles",
    "token": "tok-roles",
    "signed": "e30:1vAbCd:roles-signature",  # a token's shape, not a valid one
    "row_id": "1",
    "kind": "output",
    "rest": "results/",
    "batch_id": "batch_roles",
    "file_id": "file-roles",
    "token_id": "1",
}


@dataclass(frozen=True)
class Route:
    name: str
    url: str
    view: Any

    @property
    def permissions(self) -> tuple[str, ...]:
        return getattr(self.view, "permissions", ())

    @property
    def changes(self) -> bool:
        return self.name in CHANGING

    @property
    def token_auth(self) -> bool:
        """The /v1/ API: a personal token, never the session, opens it (tests/test_api_*)."""
        return getattr(self.view, "token_auth", False)


# Views that change something here or upstream when POSTed to.
CHANGING = {
    "batch-create",
    "submission-confirm",
    "batch-sync",
    "batch-cancel",
    "batch-retry",
    "batch-label",
    "batch-watch",
    "connection-test",
    "profile",
    "token-create",
    "token-revoke",
    "logout",
}


def routes() -> list[Route]:
    found: list[Route] = []

    def walk(patterns: list, prefix: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if route.startswith(SKIPPED_PREFIXES):
                continue
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern):
                url = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: SAMPLE[m.group(1)], route)
                found.append(Route(p.name or route, url, p.callback))

    walk(get_resolver().url_patterns, "")
    return found


ROUTES = routes()
# Session-authenticated pages: the /v1/ API answers 401 to a session (see the last test).
PAGES = [r for r in ROUTES if not r.token_auth]


def test_the_walk_finds_every_page():
    names = {r.name for r in ROUTES}
    assert {"batch-list", "batch-detail", "batch-cancel", "activity", "openai-webhook"} <= names
    assert len(ROUTES) >= 25


def test_every_signed_in_view_states_its_rule():
    for route in ROUTES:
        if route.name in PUBLIC or route.name == "logout":
            continue
        assert hasattr(route.view, "permissions"), f"{route.name} has no @rule"


@pytest.fixture
def world(db) -> dict[str, Any]:
    """A running batch made by the submitter, and a person per role."""
    people = {}
    for role in ROLES:
        user = User.objects.create_user(f"u-{role.lower()}", password="pw-roles-123")
        if role != "nobody":
            user.groups.add(Group.objects.get(name=role))
        people[role] = user
    batch = batch_upsert(payload=make_batch(id="batch_roles", status="completed")).batch
    Batch.objects.filter(pk=batch.pk).update(created_by=people["Submitters"])
    Submission.objects.create(token="tok-roles", user=people["Submitters"])
    return people


def allowed(user: User, route: Route) -> bool:
    if route.name == "submission-confirm":  # a submission is its author's alone
        return user.username == "u-submitters"
    return not route.permissions or any(user.has_perm(p) for p in route.permissions)


@pytest.mark.parametrize("route", [r for r in PAGES if r.name not in PUBLIC], ids=str)
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_visitors_are_sent_to_sign_in(client, world, route, method):
    response = getattr(client, method)(route.url)

    assert response.status_code in (302, 405), (route.name, response.status_code)
    if response.status_code == 302:
        assert response["Location"].startswith("/accounts/login/"), route.name


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "route", [r for r in PAGES if r.name not in PUBLIC and r.name != "logout"], ids=str
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_each_role_is_refused_exactly_what_it_may_not_do(
    client, world, upstream, route, role, method
):
    user = world[role]
    client.force_login(user)

    response = getattr(client, method)(route.url)

    if allowed(user, route):
        assert response.status_code != 403, (route.name, role, method)
    else:
        # Another person's submission is not found (404) for whoever may submit: its token
        # and owner find it (issue 19); a role that may not submit is refused (403) first.
        refused = (403, 404, 405) if route.name == "submission-confirm" else (403, 405)
        assert response.status_code in refused, (route.name, role, method, response.status_code)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.changes and r.name != "logout"], ids=str)
def test_a_change_without_a_csrf_token_is_refused(world, upstream, route):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["Admins"])

    response = client.post(route.url)

    assert response.status_code == 403, route.name


# Exempt from CSRF by design: the signed webhook, the token-authenticated API (no cookie opens
# it), and sign-out (Django's own view, whose worst case is being signed out).
CSRF_EXEMPT = {"openai-webhook", "logout"}


@pytest.mark.parametrize(
    "route", [r for r in PAGES if r.name not in CSRF_EXEMPT and r.name not in PUBLIC], ids=str
)
def test_no_post_without_a_csrf_token_does_anything(world, upstream, route):
    """Every page, not only the ones listed as changing: a POST without the token is refused
    before the view runs (403), or the view takes no POST (405). A new URL is covered
    without editing this file."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["Admins"])
    before = (Batch.objects.count(), Submission.objects.count())

    response = client.post(route.url, {"label": "x", "confirm": "yes"})

    assert response.status_code in (403, 405), (route.name, response.status_code)
    assert (Batch.objects.count(), Submission.objects.count()) == before


@pytest.mark.parametrize(
    "route",
    [r for r in PAGES if r.url.startswith("/connections/default/")],
    ids=str,
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_member_outside_the_connection_s_groups_gets_404(client, world, upstream, route, method):
    research = Group.objects.create(name="Research")
    Connection.objects.filter(pk=default_connection().pk).first().groups.add(research)
    client.force_login(world["Operators"])

    response = getattr(client, method)(route.url)

    # Refused for the role first where the role lacks the permission (connection-test: Admins).
    refusals = (404, 405) if allowed(world["Operators"], route) else (403, 405)
    assert response.status_code in refusals, (route.name, method, response.status_code)


def test_a_submitter_cancels_their_own_batch_but_not_another_s(client, world, upstream):
    other = batch_upsert(payload=make_batch(id="batch_other", status="in_progress")).batch
    client.force_login(world["Submitters"])

    refused = client.post(f"/connections/default/batches/{other.openai_id}/cancel/")

    assert refused.status_code == 403
    assert "Operators any batch" in refused.content.decode()


def test_only_admins_reach_the_admin_site(client, world):
    for role, expected in [("Operators", 302), ("Admins", 200)]:
        client.force_login(world[role])
        assert client.get("/admin/").status_code == expected, role
    client.force_login(world["Admins"])
    assert client.get("/admin/batches/connection/").status_code == 200
    assert client.get("/admin/auth/user/").status_code == 200


def test_pages_show_only_the_buttons_a_role_may_use(client, world, upstream):
    listing = {}
    for role in ["Viewers", "Operators"]:
        client.force_login(world[role])
        listing[role] = client.get("/").content.decode()

    assert "Sync now" not in listing["Viewers"] and "New batch</a>" not in listing["Viewers"]
    assert "Sync now" in listing["Operators"] and "New batch" in listing["Operators"]


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r.token_auth and r.name != "api-unknown"], ids=str
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_the_api_ignores_a_signed_in_session(client, world, route, method):
    """/v1/ takes a personal token only: a browser's session (even an admin's) is no key, so a
    page elsewhere cannot make a signed-in browser call it (and it needs no CSRF token)."""
    assert route.url.startswith("/v1/")
    assert route.permissions, f"{route.name} has no rule"
    client.force_login(world["Admins"])

    response = getattr(client, method)(route.url)

    assert response.status_code in (401, 405), (route.name, method, response.status_code)
    if response.status_code == 401:
        assert response.json()["error"]["code"] == "missing_api_key"
