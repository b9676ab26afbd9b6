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
    database starts again at 0: each test starts with an empty page cache.

    A test's transaction never commits, so Django would never run the callback that raises the
    generation. `_commit_as_in_production` runs it when production would: when the outermost
    transaction the code opened ends well (at once for a write outside one), and never for one
    rolled back. Tests marked `real_commits` commit for real (tests/test_page_cache.py)."""
    from django.core.cache import caches

    for alias in ("pages", "people"):
        caches[alias].clear()
    from batches.cache import rows

    rows._local.clear()  # rows kept in this process; the shared cache is content-addressed
    from api.services.batches import _unreachable_until

    _unreachable_until.clear()  # the API's rest after an unreachable upstream, per process
    if not request.node.get_closest_marker("real_commits"):
        _commit_as_in_production(monkeypatch)
    yield
    for alias in ("pages", "people"):
        caches[alias].clear()


def _commit_as_in_production(monkeypatch) -> None:
    """Inside the test's own transaction (Django marks its blocks `_from_testcase`), raise the
    generation at the moment production's commit would: when no block the code opened is left.
    Only the generation's callback is run this way; other `on_commit` work keeps Django's test
    behaviour (it never runs unless a test asks for it)."""
    from django.db import connections, transaction

    from batches.cache import generations as generation

    def opened_by_code(connection) -> bool:
        return any(
            not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
        )

    def on_commit(func, using=None):
        connection = transaction.get_connection(using)
        if opened_by_code(connection):
            transaction.on_commit(func, using=using)  # kept with its savepoint, as Django does
        else:
            func()  # production is in autocommit here: the write has committed

    exit_block = transaction.Atomic.__exit__

    def exit_and_commit(self, exc_type, exc_value, traceback):
        result = exit_block(self, exc_type, exc_value, traceback)
        connection = transaction.get_connection(self.using)
        if connection.in_atomic_block and not opened_by_code(connection):
            due = [c for c in connection.run_on_commit if _raises_generation(c[1], generation)]
            connection.run_on_commit = [c for c in connection.run_on_commit if c not in due]
            for _sids, func, *_ in due:
                func()
        return result

    monkeypatch.setattr(generation, "_on_commit", on_commit)
    monkeypatch.setattr(transaction.Atomic, "__exit__", exit_and_commit)
    # A rolled-back transaction leaves its scopes pending, raised at the next commit (as in
    # production: one raise too many is harmless); not carried from one test into the next.
    for connection in connections.all(initialized_only=True):
        connection.__dict__.pop("_bw_generation_scopes", None)


def _raises_generation(func, generation) -> bool:
    return getattr(func, "func", None) is generation._raise_pending


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
