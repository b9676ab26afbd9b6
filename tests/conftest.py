"""Shared fixtures: a team (admin, submitter, viewer), canned payloads, and no network.

Every test runs inside `responses.RequestsMock()`: a request to anything but loopback that no
test registered fails loudly. Loopback passes through, for the simulator and browser tests.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from django.conf import settings
from django.contrib.auth.models import Group, User

from batches.models import Connection
from tests.openapi import validate_payload, validate_request

PAYLOADS = Path(__file__).parent / "payloads"
API = settings.OPENAI_BASE_URL


def load_payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def make_batch(**overrides: Any) -> dict[str, Any]:
    """A complete Batch object as the live API sends it (nulls included), checked against the
    OpenAPI file so canned data cannot drift from the real shape."""
    payload = copy.deepcopy(load_payload("batch_in_progress.json"))
    payload.update(overrides)
    validate_payload(payload, "Batch")
    return payload


def make_list(batches: list[dict[str, Any]], *, has_more: bool = False) -> dict[str, Any]:
    page = {
        "object": "list",
        "data": batches,
        "first_id": batches[0]["id"] if batches else None,
        "last_id": batches[-1]["id"] if batches else None,
        "has_more": has_more,
    }
    validate_payload(page, "ListBatchesResponse")
    return page


@pytest.fixture(autouse=True)
def no_network() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru(re.compile(r"http://(127\.0\.0\.1|localhost)(:\d+)?/"))
        yield rsps


@pytest.fixture(autouse=True)
def page_cache_per_test(request, monkeypatch) -> Iterator[None]:
    """Cached page bodies are keyed by the cache generation, which every test's rolled-back
    database starts again at 0: each test starts with an empty page cache. And since a test's
    transaction never commits, the generation is raised at once rather than at the commit
    (tests/test_page_cache.py checks the real, after-commit order with committed transactions)."""
    from django.core.cache import caches

    from batches.cache import generations as generation

    for alias in ("pages", "people"):
        caches[alias].clear()
    from api.services.batches import _unreachable_until

    _unreachable_until.clear()  # the API's rest after an unreachable upstream, per process
    if not request.node.get_closest_marker("real_commits"):
        monkeypatch.setattr(generation, "_on_commit", lambda func, using=None: func())
    yield
    for alias in ("pages", "people"):
        caches[alias].clear()


@pytest.fixture(autouse=True)
def quiet_sign_ins(request) -> Iterator[None]:
    """`client.force_login` sends Django's sign-in signal, which the audit trail records; most
    tests are not about that entry. Tests marked `audit_sign_ins` keep it."""
    if request.node.get_closest_marker("audit_sign_ins"):
        yield
        return
    from django.contrib.auth.signals import user_logged_in

    from batches.services.audit import audit_sign_in

    user_logged_in.disconnect(dispatch_uid="bw-sign-in")
    yield
    user_logged_in.connect(audit_sign_in, dispatch_uid="bw-sign-in")


@pytest.fixture
def upstream(no_network: responses.RequestsMock) -> responses.RequestsMock:
    """The faked OpenAI API. Every request the client sends is checked against the OpenAPI file
    when the test ends."""
    yield no_network
    for call in no_network.calls:
        if call.request.url.startswith(API):
            validate_request(
                call.request.method, call.request.url, call.request.body, call.request.headers
            )


@pytest.fixture
def admin_user(db) -> User:
    return User.objects.create_superuser("alice", "alice@example.com", "pw-alice-123")


@pytest.fixture
def submitter(db) -> User:
    user = User.objects.create_user("sam", "sam@example.com", "pw-sam-123")
    user.groups.add(Group.objects.get(name="Submitters"))
    return user


@pytest.fixture
def viewer(db) -> User:
    user = User.objects.create_user("vic", "vic@example.com", "pw-vic-123")
    user.groups.add(Group.objects.get(name="Viewers"))
    return user


@pytest.fixture
def operator(db) -> User:
    user = User.objects.create_user("olga", "olga@example.com", "pw-olga-123")
    user.groups.add(Group.objects.get(name="Operators"))
    return user


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def submitter_client(client, submitter):
    client.force_login(submitter)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def research(db) -> Connection:
    """A second connection, restricted to the group Research (modules with a Research of
    their own, with a secret or another URL, define it again)."""
    connection = Connection.objects.create(
        name="Research",
        slug="research",
        base_url="https://research.example.test/v1",
        key_env="RESEARCH_KEY",
    )
    connection.groups.add(Group.objects.create(name="Research"))
    return connection


@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    """Record the client's waits between retries instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr("batches.openai_client.time.sleep", waits.append)
    return waits
