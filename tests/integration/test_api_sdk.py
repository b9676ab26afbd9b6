"""The official OpenAI SDK, unchanged, against batchweb's /v1/ API served over HTTP, with the
simulator as the connection's upstream over HTTP: a batch script's whole flow, each answer
checked against the OpenAPI copy in tests/openapi, and an SDK retry after a timeout that
makes one batch, not two.

batchweb is served by a single-threaded WSGI server in a thread of the test process, sharing
the test's database connection (as Django's LiveServerTestCase does for in-memory SQLite):
the SDK's retry then waits in the socket's queue until the first attempt is done. The wait of
a retry that reaches a busy multi-threaded server is tested in tests/test_api_batches.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
from django.db import connections

from api.models import CreateRequest
from api.services.tokens import token_create
from batches.models import Batch, Event
from tests.integration.conftest import calls, write_jsonl
from tests.openapi import validate_response

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINT = "/v1/chat/completions"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def dashboard(transactional_db) -> Iterator[str]:
    """batchweb on a free loopback port; yields its base URL."""
    shared = {c.alias: c for c in connections.all() if c.vendor == "sqlite" and c.is_in_memory_db()}
    for connection in shared.values():
        connection.inc_thread_sharing()
    server = WSGIServer(("127.0.0.1", 0), _QuietHandler, allow_reuse_address=False)
    server.set_app(WSGIHandler())

    def serve() -> None:
        for alias, connection in shared.items():
            connections[alias] = connection
        try:
            server.serve_forever(poll_interval=0.05)
        finally:
            connections.close_all()  # a no-op for the shared in-memory database

    thread = threading.Thread(target=serve, name="batchweb-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        for connection in shared.values():
            connection.dec_thread_sharing()


class Answers:
    """Every answer of /v1/, each JSON one checked against the OpenAPI copy as it arrives."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.sent: list[tuple[str, str]] = []

    def request(self, request: httpx.Request) -> None:
        self.sent.append((request.method, request.url.path))

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        self.seen.append((request.method, request.url.path, response.status_code))
        if response.status_code == 200 and "json" in response.headers.get("content-type", ""):
            validate_response(request.method, request.url.path, json.loads(response.content))
        elif response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
def sdk(dashboard, submitter, answers):
    """Build an SDK client for batchweb with a new submit token of the submitter's."""

    def build(**options) -> openai.OpenAI:
        plain = token_create(user=submitter, name="nightly script", scope="submit", days=30).plain
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 20.0)
        http = httpx.Client(event_hooks={"request": [answers.request], "response": [answers]})
        return openai.OpenAI(base_url=f"{dashboard}/v1", api_key=plain, http_client=http, **options)

    return build


def test_a_batch_script_runs_unchanged_through_batchweb(
    sim, sdk, answers, submitter, make_client, tmp_path: Path
):
    client = sdk()
    path = write_jsonl(tmp_path / "nightly.jsonl", count=3)

    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    created = [
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint=ENDPOINT,
            completion_window="24h",
            metadata={"job": f"nightly-{i}"},
        )
        for i in range(5)
    ]
    listed = list(client.batches.list(limit=2))  # auto-pagination: three pages
    pages = calls(sim, "listBatches")
    retrieved = client.batches.retrieve(created[0].id)
    cancelled = client.batches.cancel(created[1].id)
    content = client.files.content(uploaded.id).read()
    file_info = client.files.retrieve(uploaded.id)

    assert uploaded.purpose == "batch" and uploaded.bytes == path.stat().st_size
    assert len({b.id for b in created}) == 5
    upstream_ids = [b["id"] for b in make_client().list_batches(limit=100)["data"]]
    assert [b.id for b in listed] == upstream_ids  # every batch once, in upstream's order
    assert sorted(upstream_ids) == sorted(b.id for b in created)
    assert pages == 3
    assert retrieved.id == created[0].id and retrieved.metadata["job"] == "nightly-0"
    assert cancelled.status == "cancelling"
    assert content == path.read_bytes()
    assert file_info.id == uploaded.id and file_info.filename == "nightly.jsonl"

    cached = {b.openai_id: b for b in Batch.objects.all()}
    assert set(cached) == set(upstream_ids)
    first = cached[created[0].id]
    assert first.created_by == submitter and first.label == "nightly-0"
    assert (first.input_filename, first.input_lines) == ("nightly.jsonl", 3)
    assert cached[created[1].id].status == "cancelling"
    actions = list(Event.objects.order_by("id").values_list("action", "username", "detail"))
    assert [a for a, _, _ in actions if a != Event.Action.TOKEN_CREATE] == [
        Event.Action.UPLOAD,
        *[Event.Action.CREATE] * 5,
        Event.Action.CANCEL,
        Event.Action.DOWNLOAD,
    ]
    assert all(user == "sam" for _, user, _ in actions)
    assert all("via API token “nightly script”" in d for a, _, d in actions if a != "token_create")
    assert {status for _, _, status in answers.seen} == {200}


def test_an_sdk_retry_after_a_timeout_makes_one_batch(sim, sdk, answers, make_client, tmp_path):
    uploaded = sdk().files.create(
        file=write_jsonl(tmp_path / "in.jsonl").open("rb"), purpose="batch"
    )
    client = sdk(max_retries=1, timeout=2.0)
    sim.set_faults({"latency": 3.0})  # the create answers after the SDK gave up on it
    try:
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
        )
    finally:
        sim.set_faults({"latency": 0})

    assert answers.sent.count(("POST", "/v1/batches")) == 2  # the SDK did retry
    creates = [s for s in answers.seen if s[:2] == ("POST", "/v1/batches")]
    assert creates == [("POST", "/v1/batches", 200)]  # the first attempt's answer never came
    assert calls(sim, "createBatch") == 1
    assert [b["id"] for b in make_client().list_batches(limit=100)["data"]] == [batch.id]
    assert list(Batch.objects.values_list("openai_id", flat=True)) == [batch.id]
    assert CreateRequest.objects.get().state == CreateRequest.State.DONE
    assert Event.objects.filter(action=Event.Action.CREATE).count() == 1


def test_an_sdk_retry_with_an_idempotency_key_makes_one_batch_and_the_key_answers_it_again(
    sim, sdk, answers, tmp_path
):
    uploaded = sdk().files.create(
        file=write_jsonl(tmp_path / "in.jsonl").open("rb"), purpose="batch"
    )
    client = sdk(max_retries=1, timeout=2.0)
    request = {"input_file_id": uploaded.id, "endpoint": ENDPOINT, "completion_window": "24h"}
    key = {"Idempotency-Key": "nightly-2026-11-29"}
    sim.set_faults({"latency": 3.0})
    try:
        batch = client.batches.create(**request, extra_headers=key)
    finally:
        sim.set_faults({"latency": 0})

    assert answers.sent.count(("POST", "/v1/batches")) == 2  # the SDK did retry
    again = client.batches.create(**request, extra_headers=key)
    with pytest.raises(openai.BadRequestError) as reused:
        client.batches.create(**request, metadata={"job": "other"}, extra_headers=key)

    assert again.id == batch.id
    assert calls(sim, "createBatch") == 1
    assert Batch.objects.count() == 1
    assert reused.value.code == "idempotency_key_reused"


def test_the_sdk_reads_batchweb_s_refusals_as_openai_s(sim, sdk, viewer, dashboard, tmp_path):
    read_only = openai.OpenAI(
        base_url=f"{dashboard}/v1",
        api_key=token_create(user=viewer, name="reader", scope="read", days=7).plain,
        max_retries=0,
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a"}\nnot json\n')

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{dashboard}/v1", api_key="sk-not-ours", max_retries=0
        ).batches.list()
    with pytest.raises(openai.PermissionDeniedError) as scope:
        read_only.files.create(file=bad.open("rb"), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk().files.create(file=bad.open("rb"), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        read_only.batches.retrieve("batch_nope")

    assert scope.value.code == "insufficient_scope"
    assert refused.value.code == "invalid_batch_file" and refused.value.param == "file"
    assert "line 1:" in refused.value.message and "line 2:" in refused.value.message
    assert calls(sim, "createFile") == 0
    assert list(read_only.batches.list()) == []
