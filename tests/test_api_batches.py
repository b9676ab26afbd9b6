"""/v1/batches with the Django test client and a faked upstream: the token and connection
checks, every refusal in OpenAI's error shape (and in the audit trail, with nothing created),
the create's duplicate guard, list/retrieve/cancel, and upstream failures passed on as OpenAI
would answer them. Every 200 answer is checked against the OpenAPI copy in tests/openapi."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import Group
from django.utils import timezone
from responses import matchers

from api.models import ApiToken, CreateRequest
from api.services import batches as api_batches
from api.services.tokens import token_create, token_revoke
from batches.models import Batch, Connection, Event, default_connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch, make_list
from tests.openapi import validate_response

pytestmark = pytest.mark.django_db

API = settings.OPENAI_BASE_URL
ENDPOINT = "/v1/chat/completions"
CREATE_BODY = {"input_file_id": "file-in1", "endpoint": ENDPOINT, "completion_window": "24h"}


def auth(plain: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plain}", **headers}


@pytest.fixture
def submit_token(submitter) -> str:
    return token_create(user=submitter, name="script", scope="submit", days=30).plain


@pytest.fixture
def read_token(viewer) -> str:
    return token_create(user=viewer, name="reader", scope="read", days=30).plain


def post_json(client, path: str, body: Any, plain: str, **headers: str):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        path, data=data, content_type="application/json", headers=auth(plain, **headers)
    )


def ok(response, method: str, path: str) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    payload = response.json()
    validate_response(method, path, payload)
    return payload


def refused(response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param), error
    assert error["message"]
    return error


def echo_create(request) -> tuple[int, dict[str, str], str]:
    """Upstream's answer to a create: a validating batch carrying the metadata it was sent."""
    body = json.loads(request.body)
    payload = make_batch(
        id=f"batch_{len(Batch.objects.all()) + 1}",
        status="validating",
        in_progress_at=None,
        input_file_id=body["input_file_id"],
        endpoint=body["endpoint"],
        metadata=body.get("metadata"),
    )
    return 200, {"x-request-id": "req_create"}, json.dumps(payload)


@pytest.fixture
def creates(upstream):
    upstream.add_callback("POST", f"{API}/batches", callback=echo_create)
    return upstream


def upstream_creates(upstream) -> int:
    return sum(
        1
        for c in upstream.calls
        if c.request.method == "POST" and c.request.url == f"{API}/batches"
    )


def refusals() -> list[Event]:
    return list(Event.objects.filter(action=Event.Action.API_REFUSED))


# --- Tokens, scopes, roles, connections --------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("Bearer sk-proj-not-ours", "invalid_api_key"),
        ("Bearer bw_0123abcd_" + "x" * 43, "invalid_api_key"),
        ("Token bw_0123abcd_" + "x" * 43, "invalid_api_key"),
    ],
)
def test_a_missing_malformed_or_unknown_token_is_a_401_logged_but_not_audited(
    client, upstream, header, code, caplog
):
    """Anyone can send those: the refusal is logged, never an audit row (issue 19: nothing
    durable from strangers); a known token refused is audited (the tests below)."""
    headers = {"Authorization": header} if header else {}

    response = client.post(
        "/v1/batches", data=CREATE_BODY, content_type="application/json", headers=headers
    )

    refused(response, 401, code)
    assert refusals() == []
    logged = [r.getMessage() for r in caplog.records if r.name == "api.auth"]
    assert len(logged) == 1 and "POST '/v1/batches'" in logged[0] and code in logged[0]
    assert "x" * 43 not in logged[0] and "not-ours" not in logged[0]  # never echoed
    assert "not-ours" not in response.content.decode() and "x" * 43 not in response.content.decode()
    assert not upstream.calls and not Batch.objects.exists() and not CreateRequest.objects.exists()


def test_an_expired_token_is_a_401_naming_its_owner_in_the_audit_trail(
    client, upstream, submitter, submit_token
):
    ApiToken.objects.update(expires_at=timezone.now() - dt.timedelta(minutes=1))

    response = post_json(client, "/v1/batches", CREATE_BODY, submit_token)

    error = refused(response, 401, "expired_api_key")
    assert "expired on" in error["message"] and submit_token not in response.content.decode()
    [event] = refusals()
    assert event.user == submitter and "expired" in event.detail
    assert not upstream.calls and not Batch.objects.exists()


def test_a_revoked_token_is_a_401(client, upstream, submitter, submit_token):
    token_revoke(token=ApiToken.objects.get(), by=submitter)

    response = client.get("/v1/batches", headers=auth(submit_token))

    refused(response, 401, "revoked_api_key")
    assert refusals()[0].user == submitter and not upstream.calls


def test_a_read_token_cannot_create(client, upstream, submitter):
    plain = token_create(user=submitter, name="reader", scope="read", days=7).plain

    response = post_json(client, "/v1/batches", CREATE_BODY, plain)

    error = refused(response, 403, "insufficient_scope")
    assert error["type"] == "permission_error" and "submit scope" in error["message"]
    [event] = refusals()
    assert event.user == submitter and "via API token “reader”" in event.detail
    assert not upstream.calls and not CreateRequest.objects.exists()


def test_a_submit_token_does_not_lift_its_owner_s_role(client, upstream, viewer):
    plain = token_create(user=viewer, name="wishful", scope="submit", days=7).plain

    response = post_json(client, "/v1/batches", CREATE_BODY, plain)

    refused(response, 403, "insufficient_role")
    assert not upstream.calls and len(refusals()) == 1


@pytest.mark.parametrize("slug", ["research", "no-such-connection"])
def test_a_connection_the_person_may_not_use_is_a_403(client, upstream, submit_token, slug):
    research = Connection.objects.create(
        name="Research", slug="research", base_url="https://research.test/v1", key_env="K"
    )
    research.groups.add(Group.objects.create(name="Research team"))

    response = client.get(
        "/v1/batches", headers=auth(submit_token, **{"X-Batchweb-Connection": slug})
    )

    refused(response, 403, "connection_forbidden", "X-Batchweb-Connection")
    assert not upstream.calls and len(refusals()) == 1


def test_the_connection_header_picks_a_connection_the_person_may_use(client, upstream, read_token):
    Connection.objects.create(
        name="Azure EU", slug="azure-eu", base_url="https://eu.test/v1", key_env="PATH"
    )
    upstream.get("https://eu.test/v1/batches", json=make_list([make_batch(id="batch_eu")]))

    response = client.get(
        "/v1/batches", headers=auth(read_token, **{"X-Batchweb-Connection": "azure-eu"})
    )

    assert [b["id"] for b in ok(response, "GET", "/v1/batches")["data"]] == ["batch_eu"]
    assert Batch.objects.get().connection.slug == "azure-eu"


def test_a_disabled_connection_is_a_403(client, upstream, read_token):
    Connection.objects.filter(pk=default_connection().pk).update(enabled=False)

    response = client.get(
        "/v1/batches", headers=auth(read_token, **{"X-Batchweb-Connection": "default"})
    )

    refused(response, 403, "connection_disabled", "X-Batchweb-Connection")


# --- Create ------------------------------------------------------------------------------------


def test_a_create_is_forwarded_stamped_cached_and_audited(client, creates, submitter, submit_token):
    body = {**CREATE_BODY, "metadata": {"job": "nightly eval", "team": "search"}}

    response = post_json(client, "/v1/batches", body, submit_token)

    payload = ok(response, "POST", "/v1/batches")
    [sent] = [json.loads(c.request.body) for c in creates.calls]
    assert sent["metadata"]["job"] == "nightly eval"
    assert sent["metadata"]["batchweb_user"] == "sam"
    assert sent["metadata"]["batchweb_token"].startswith("api-")
    assert payload["id"] == "batch_1" and payload["metadata"] == sent["metadata"]
    batch = Batch.objects.get()
    assert (batch.created_by, batch.label) == (submitter, "nightly eval")
    event = Event.objects.get(action=Event.Action.CREATE)
    assert event.user == submitter and event.batch == batch
    assert "via API token “script”" in event.detail


def test_a_body_that_is_not_json_is_a_400_and_an_audit_entry(client, upstream, submit_token):
    response = post_json(client, "/v1/batches", "{not json", submit_token)

    refused(response, 400, "invalid_json")
    assert len(refusals()) == 1 and not upstream.calls and not CreateRequest.objects.exists()


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ([], None, "invalid_json"),
        (
            {"endpoint": ENDPOINT, "completion_window": "24h"},
            "input_file_id",
            "missing_required_parameter",
        ),
        ({**CREATE_BODY, "endpoint": "/v1/audio"}, "endpoint", "invalid_value"),
        ({**CREATE_BODY, "completion_window": "48h"}, "completion_window", "invalid_value"),
        ({**CREATE_BODY, "metadata": {"batchweb_user": "eve"}}, "metadata", "invalid_value"),
        (
            {**CREATE_BODY, "metadata": {f"k{i}": "v" for i in range(15)}},
            "metadata",
            "invalid_value",
        ),
        ({**CREATE_BODY, "metadata": {"k": 1}}, "metadata", "invalid_value"),
        (
            {**CREATE_BODY, "output_expires_after": {"anchor": "created_at", "seconds": 60}},
            "output_expires_after",
            "invalid_value",
        ),
        ({**CREATE_BODY, "priority": "high"}, "priority", "unknown_parameter"),
    ],
)
def test_an_invalid_create_is_a_400_naming_the_parameter(
    client, upstream, submit_token, body, param, code
):
    response = post_json(client, "/v1/batches", body, submit_token)

    refused(response, 400, code, param)
    assert len(refusals()) == 1 and not upstream.calls and not Batch.objects.exists()


def test_the_same_idempotency_key_answers_the_same_batch(client, creates, submit_token):
    key = {"Idempotency-Key": "run-42"}

    first = post_json(client, "/v1/batches", CREATE_BODY, submit_token, **key)
    second = post_json(client, "/v1/batches", CREATE_BODY, submit_token, **key)
    other = post_json(
        client, "/v1/batches", {**CREATE_BODY, "metadata": {"a": "b"}}, submit_token, **key
    )

    assert ok(first, "POST", "/v1/batches")["id"] == ok(second, "POST", "/v1/batches")["id"]
    refused(other, 400, "idempotency_key_reused")
    assert upstream_creates(creates) == 1 and Batch.objects.count() == 1


def test_an_identical_create_without_a_key_is_taken_for_a_retry_until_its_batch_ends(
    client, creates, submit_token
):
    first = ok(post_json(client, "/v1/batches", CREATE_BODY, submit_token), "POST", "/v1/batches")
    again = ok(post_json(client, "/v1/batches", CREATE_BODY, submit_token), "POST", "/v1/batches")
    Batch.objects.update(status="failed")
    after_it_ended = post_json(client, "/v1/batches", CREATE_BODY, submit_token)

    assert again["id"] == first["id"]
    assert ok(after_it_ended, "POST", "/v1/batches")["id"] != first["id"]
    assert upstream_creates(creates) == 2


def test_an_overlong_idempotency_key_is_a_400(client, creates, submit_token):
    key = {"Idempotency-Key": "k" * 256}

    response = post_json(client, "/v1/batches", CREATE_BODY, submit_token, **key)

    refused(response, 400, "invalid_value", "Idempotency-Key")
    assert not creates.calls


def test_a_new_key_makes_a_new_batch(client, creates, submit_token):
    one = post_json(client, "/v1/batches", CREATE_BODY, submit_token, **{"Idempotency-Key": "a"})
    two = post_json(client, "/v1/batches", CREATE_BODY, submit_token, **{"Idempotency-Key": "b"})

    assert one.json()["id"] != two.json()["id"] and upstream_creates(creates) == 2


def test_a_retry_that_arrives_while_the_first_attempt_waits_for_upstream_waits_for_it(
    submitter, upstream
):
    connection = default_connection()
    args = api_batches.create_args(CREATE_BODY, connection)
    first = CreateRequest.objects.create(
        user=submitter,
        connection=connection,
        key="key:k1",
        fingerprint=args.fingerprint(connection),
        submission_token="api-first",
    )
    batch = batch_upsert(payload=make_batch(id="batch_first")).batch
    naps = []

    def first_attempt_finishes(seconds: float) -> None:
        naps.append(seconds)
        CreateRequest.objects.filter(pk=first.pk).update(state="done", batch=batch)

    found, made = api_batches.api_batch_create(
        user=submitter,
        connection=connection,
        args=args,
        idempotency_key="k1",
        sleep=first_attempt_finishes,
    )

    assert (found, made, len(naps)) == (batch, False, 1)
    assert not upstream.calls


def test_a_retry_gives_up_waiting_with_a_409_the_sdk_retries(submitter, upstream, settings):
    settings.BATCHWEB_API_IN_FLIGHT_WAIT_SECONDS = 0
    connection = default_connection()
    args = api_batches.create_args(CREATE_BODY, connection)
    CreateRequest.objects.create(
        user=submitter,
        connection=connection,
        key="key:k1",
        fingerprint=args.fingerprint(connection),
        submission_token="api-first",
    )

    with pytest.raises(api_batches.ApiError) as busy:
        api_batches.api_batch_create(
            user=submitter, connection=connection, args=args, idempotency_key="k1"
        )

    assert (busy.value.status, busy.value.code) == (409, "request_in_progress")


def test_after_a_failed_attempt_a_retry_looks_upstream_before_creating(
    client, upstream, submitter, submit_token, no_sleep
):
    """The first attempt timed out (or 5xx'd) after upstream made the batch: the retry finds
    it by the submission token instead of making a second one."""
    post_json(client, "/v1/batches", CREATE_BODY, submit_token, **{"Idempotency-Key": "k"})
    # No create was registered upstream: the first attempt failed (connection error).
    record = CreateRequest.objects.get()
    assert record.state == CreateRequest.State.FAILED
    made = make_batch(id="batch_made", metadata={"batchweb_token": record.submission_token})
    upstream.get(f"{API}/batches", json=make_list([made]))
    tried = upstream_creates(upstream)

    response = post_json(
        client, "/v1/batches", CREATE_BODY, submit_token, **{"Idempotency-Key": "k"}
    )

    assert ok(response, "POST", "/v1/batches")["id"] == "batch_made"
    assert upstream_creates(upstream) == tried  # found, not created again
    assert Batch.objects.get().created_by == submitter


# --- Upstream failures ---------------------------------------------------------------------


def test_a_429_is_passed_on_with_retry_after(client, upstream, submit_token, no_sleep):
    upstream.post(
        f"{API}/batches",
        status=429,
        json={"error": {"message": "Slow down", "type": "requests", "code": "rate_limit_exceeded"}},
        headers={"retry-after": "7", "x-request-id": "req_slow"},
    )

    response = post_json(client, "/v1/batches", CREATE_BODY, submit_token)

    error = refused(response, 429, "rate_limit_exceeded")
    assert response["Retry-After"] == "7" and "Slow down" in error["message"]
    assert response["X-Upstream-Request-Id"] == "req_slow"
    assert Event.objects.filter(action=Event.Action.CREATE_FAILED).count() == 1
    assert not Batch.objects.exists()


def test_an_unreachable_upstream_is_a_502_that_says_so(client, upstream, submit_token, no_sleep):
    upstream.post(f"{API}/batches", body=requests.ConnectionError("refused"))
    upstream.get(f"{API}/batches", body=requests.ConnectionError("refused"))

    response = post_json(client, "/v1/batches", CREATE_BODY, submit_token)

    error = refused(response, 502, "upstream_unavailable")
    assert "could not connect to https://api.openai.test/v1" in error["message"]
    assert "sk-test-key-never-shown" not in response.content.decode()
    assert not Batch.objects.exists()
    assert Event.objects.filter(action=Event.Action.CREATE_FAILED).count() == 1


def test_a_key_upstream_refuses_is_batchweb_s_problem_not_the_script_s(
    client, upstream, read_token
):
    upstream.get(f"{API}/batches", status=401, json={"error": {"message": "Incorrect API key"}})

    response = client.get("/v1/batches", headers=auth(read_token))

    refused(response, 502, "upstream_auth_failed")


def test_an_upstream_400_keeps_its_param_and_code(client, upstream, submit_token):
    upstream.post(
        f"{API}/batches",
        status=400,
        json={
            "error": {
                "message": "No such file",
                "type": "invalid_request_error",
                "param": "input_file_id",
                "code": "invalid_file_id",
            }
        },
    )

    response = post_json(client, "/v1/batches", CREATE_BODY, submit_token)

    refused(response, 400, "invalid_file_id", "input_file_id")


# --- List, retrieve, cancel ------------------------------------------------------------------


def test_the_list_is_upstream_s_page_and_fills_the_cache(client, upstream, read_token):
    page = make_list([make_batch(id="batch_b"), make_batch(id="batch_a")], has_more=True)
    upstream.get(
        f"{API}/batches",
        json=page,
        match=[matchers.query_param_matcher({"after": "batch_c", "limit": "2"})],
    )

    response = client.get("/v1/batches?after=batch_c&limit=2", headers=auth(read_token))

    payload = ok(response, "GET", "/v1/batches")
    assert [b["id"] for b in payload["data"]] == ["batch_b", "batch_a"]
    assert (payload["has_more"], payload["last_id"]) == (True, "batch_a")
    assert response["X-Batchweb-Source"] == "upstream"
    assert set(Batch.objects.values_list("openai_id", flat=True)) == {"batch_a", "batch_b"}


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
def test_a_bad_limit_is_a_400(client, upstream, read_token, limit):
    response = client.get(f"/v1/batches?limit={limit}", headers=auth(read_token))

    refused(response, 400, "invalid_value", "limit")


def test_the_list_comes_from_the_cache_when_upstream_is_down_and_pages_the_same_way(
    client, upstream, read_token, no_sleep
):
    upstream.get(f"{API}/batches", body=requests.ConnectionError("down"))
    base = 1_760_000_000
    for i in range(5):
        batch_upsert(payload=make_batch(id=f"batch_{i}", created_at=base + i))

    ids, after = [], None
    for _ in range(5):
        query = f"?limit=2&after={after}" if after else "?limit=2"
        response = client.get(f"/v1/batches{query}", headers=auth(read_token))
        page = ok(response, "GET", "/v1/batches")
        assert response["X-Batchweb-Source"] == "cache"
        ids += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]

    assert ids == ["batch_4", "batch_3", "batch_2", "batch_1", "batch_0"]


def test_retrieve_answers_upstream_s_batch_and_stores_it(client, upstream, read_token):
    upstream.get(f"{API}/batches/batch_x", json=make_batch(id="batch_x", status="completed"))

    response = client.get("/v1/batches/batch_x", headers=auth(read_token))

    assert ok(response, "GET", "/v1/batches/batch_x")["status"] == "completed"
    assert Batch.objects.get().status == "completed"


def test_an_unknown_batch_is_a_404(client, upstream, read_token):
    upstream.get(
        f"{API}/batches/batch_nope",
        status=404,
        json={"error": {"message": "No batch found with id 'batch_nope'.", "code": None}},
    )

    response = client.get("/v1/batches/batch_nope", headers=auth(read_token))

    refused(response, 404, "not_found")
    assert not refusals()  # a 404 is no refusal


def test_a_submitter_cancels_their_own_batch_but_not_another_s(
    client, upstream, submitter, submit_token
):
    running = make_batch(id="batch_mine", status="in_progress")
    upstream.get(f"{API}/batches/batch_mine", json=running)
    upstream.get(f"{API}/batches/batch_theirs", json={**running, "id": "batch_theirs"})
    upstream.post(f"{API}/batches/batch_mine/cancel", json={**running, "status": "cancelling"})
    batch_upsert(payload=running)
    Batch.objects.filter(openai_id="batch_mine").update(created_by=submitter)

    mine = client.post("/v1/batches/batch_mine/cancel", headers=auth(submit_token))
    theirs = client.post("/v1/batches/batch_theirs/cancel", headers=auth(submit_token))

    assert ok(mine, "POST", "/v1/batches/batch_mine/cancel")["status"] == "cancelling"
    refused(theirs, 403, "insufficient_role")
    event = Event.objects.get(action=Event.Action.CANCEL)
    assert event.user == submitter and "via API token" in event.detail


def test_a_finished_batch_cannot_be_cancelled(client, upstream, operator):
    plain = token_create(user=operator, name="ops", scope="submit", days=7).plain
    upstream.get(f"{API}/batches/batch_done", json=make_batch(id="batch_done", status="completed"))

    response = client.post("/v1/batches/batch_done/cancel", headers=auth(plain))

    refused(response, 400, "batch_not_cancellable")


def test_other_methods_and_paths_answer_in_openai_s_shape(client, upstream, read_token):
    refused(client.delete("/v1/batches", headers=auth(read_token)), 405, "method_not_allowed")
    refused(client.get("/v1/models", headers=auth(read_token)), 404, "unknown_url")
