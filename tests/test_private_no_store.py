"""Nothing sent to a signed-in person is kept by a browser or a proxy (issue 19): every answer to
a signed-in request carries `Cache-Control: private, no-store` (batches/middleware.py), found
by walking the URLconf so a new view is covered without editing this file. The live polls keep
`private, no-cache` with their ETag, so that an unchanged poll is still a 304. Anonymous
answers and static files are left alone."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import RequestFactory

from api.services.tokens import token_create
from batches.middleware import PrivateNoStoreMiddleware, _strict_enough
from batches.models import Batch, Submission
from batches.services.batches import batch_upsert
from tests.conftest import make_batch
from tests.test_roles import PUBLIC, ROUTES

pytestmark = pytest.mark.django_db

# Polled by htmx every few seconds: ETag + 304, which needs a copy the browser may keep.
LIVE_POLLS = {"batch-rows-live", "batch-live"}
PAGES = [r for r in ROUTES if not r.token_auth and r.name not in PUBLIC and r.name != "logout"]
API = [r for r in ROUTES if r.token_auth]


def directives(response) -> set[str]:
    value = response.get("Cache-Control", "")
    return {d.strip().split("=")[0].lower() for d in value.split(",") if d.strip()}


@pytest.fixture
def world(db, admin_user) -> User:
    batch = batch_upsert(payload=make_batch(id="batch_roles", status="completed")).batch
    Batch.objects.filter(pk=batch.pk).update(created_by=admin_user)
    Submission.objects.create(token="tok-roles", user=admin_user)
    return admin_user


def test_the_walk_finds_the_live_polls():
    names = {r.name for r in ROUTES}
    assert names >= LIVE_POLLS
    assert {"batch-list", "batch-export", "activity-export", "batch-download"} <= names


@pytest.mark.parametrize("route", PAGES, ids=str)
def test_every_signed_in_answer_is_private_and_not_stored(client, world, upstream, route):
    client.force_login(world)

    response = client.get(route.url)

    if route.name in LIVE_POLLS:
        assert {"private", "no-cache"} <= directives(response), (route.name, response.status_code)
    else:
        assert {"private", "no-store"} <= directives(response), (route.name, response.status_code)
    assert "public" not in directives(response)


@pytest.mark.parametrize("route", API, ids=str)
def test_every_answer_to_a_token_is_private_and_not_stored(client, world, upstream, route):
    plain = token_create(user=world, name="walk", scope="read", days=7).plain

    response = client.get(route.url, headers={"Authorization": f"Bearer {plain}"})

    assert {"private", "no-store"} <= directives(response), (route.name, response.status_code)


def test_the_live_rows_still_answer_304_to_their_etag(client, world):
    client.force_login(world)
    url = "/batches/live/?ids="
    first = client.get(url, HTTP_HX_REQUEST="true")

    again = client.get(url, HTTP_HX_REQUEST="true", HTTP_IF_NONE_MATCH=first["ETag"])

    assert first.status_code == 200 and first["ETag"]
    assert directives(first) == {"private", "no-cache"}
    assert again.status_code == 304


def test_a_sign_in_answer_is_not_stored_either(client, world):
    world.set_password("pw-alice-123")
    world.save()

    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})

    assert response.status_code == 302
    assert {"private", "no-store"} <= directives(response)


def test_anonymous_answers_and_static_files_are_left_alone(client, db):
    to_sign_in = client.get("/")
    health = client.get("/healthz")
    static = client.get("/static/js/batchweb.js")

    assert to_sign_in.status_code == 302 and "Cache-Control" not in to_sign_in
    assert health["Cache-Control"] == "no-store"  # its own
    assert static.status_code == 200
    assert "private" not in directives(static) and "no-store" not in directives(static)


def test_a_view_s_weaker_value_is_replaced_and_a_stricter_one_kept(admin_user):
    def answer(value: str):
        def view(request):
            response = HttpResponse("x")
            if value:
                response["Cache-Control"] = value
            return response

        request = RequestFactory().get("/")
        request.user = admin_user
        return PrivateNoStoreMiddleware(view)(request)["Cache-Control"]

    assert answer("") == "private, no-store"
    assert answer("public, max-age=3600") == "private, no-store"
    assert answer("max-age=60") == "private, no-store"
    assert answer("max-age=0, no-cache, no-store, must-revalidate, private") == (
        "max-age=0, no-cache, no-store, must-revalidate, private"
    )
    assert answer("private, no-cache") == "private, no-cache"
    assert _strict_enough("no-store") and not _strict_enough("private")
