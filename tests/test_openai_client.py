"""The HTTP client: what it sends, how it retries, and the errors it raises.

Every request goes through the `upstream` fixture, which validates it against the OpenAPI copy.
"""

from __future__ import annotations

import email.utils
import io
import logging
import re
import time

import pytest
import requests
import responses
from django.conf import settings
from responses import matchers

from batches.openai_client import (
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    TOKEN_LIMIT_EXCEEDED,
    AuthError,
    BadResponse,
    ClientConfig,
    InvalidRequest,
    NotFound,
    OpenAIClient,
    OpenAIError,
    RateLimited,
    UpstreamUnavailable,
    _error_from_response,
    backoff_seconds,
    retry_after_seconds,
)
from tests.conftest import make_batch, make_list

API = settings.OPENAI_BASE_URL
KEY = settings.OPENAI_API_KEY
BATCH_URL = f"{API}/batches/batch_abc123"
RETRIED_STATUSES = [408, 409, 429, 500, 502, 503, 504]


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def client(waits: list[float]) -> OpenAIClient:
    return OpenAIClient(ClientConfig(api_key=KEY, base_url=API), sleep=waits.append)


def error_body(message: str, code: str | None = None, type_: str = "invalid_request_error"):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def call_each(client: OpenAIClient, operation: str):
    """Run one of the idempotent-by-retry-policy calls against batch_abc123."""
    if operation == "list":
        return client.list_batches()
    if operation == "retrieve":
        return client.retrieve_batch("batch_abc123")
    return client.cancel_batch("batch_abc123")


OPERATIONS = {
    "list": ("GET", f"{API}/batches"),
    "retrieve": ("GET", BATCH_URL),
    "cancel": ("POST", f"{BATCH_URL}/cancel"),
}


def ok_body(operation: str):
    if operation == "list":
        return make_list([make_batch()])
    if operation == "cancel":
        return make_batch(status="cancelling")
    return make_batch()


# --- What is sent -------------------------------------------------------------------------------


def test_it_sends_the_bearer_key_and_a_batchweb_user_agent(upstream, client):
    upstream.get(
        BATCH_URL,
        json=make_batch(),
        match=[
            matchers.header_matcher(
                {
                    "Authorization": f"Bearer {KEY}",
                    "User-Agent": re.compile(r"^batchweb/"),
                    "Accept": "application/json",
                }
            )
        ],
    )

    client.retrieve_batch("batch_abc123")

    headers = upstream.calls[0].request.headers
    assert "OpenAI-Organization" not in headers
    assert "OpenAI-Project" not in headers


def test_it_sends_the_organization_and_project_when_configured(upstream, waits):
    config = ClientConfig(api_key=KEY, base_url=API, organization="org-team", project="proj_1")
    client = OpenAIClient(config, sleep=waits.append)
    upstream.get(
        BATCH_URL,
        json=make_batch(),
        match=[
            matchers.header_matcher({"OpenAI-Organization": "org-team", "OpenAI-Project": "proj_1"})
        ],
    )

    client.retrieve_batch("batch_abc123")


def test_it_builds_its_client_from_the_settings(upstream, settings, no_sleep):
    settings.OPENAI_ORG_ID = "org-from-settings"
    settings.OPENAI_PROJECT_ID = "proj_from_settings"
    upstream.get(
        BATCH_URL,
        json=make_batch(),
        match=[
            matchers.header_matcher(
                {
                    "Authorization": f"Bearer {KEY}",
                    "OpenAI-Organization": "org-from-settings",
                    "OpenAI-Project": "proj_from_settings",
                }
            )
        ],
    )

    OpenAIClient.from_settings().retrieve_batch("batch_abc123")


def test_the_config_repr_hides_the_key():
    config = ClientConfig(api_key=KEY, base_url=API)

    assert KEY not in repr(config)
    assert KEY not in str(config)


def test_it_lists_batches_a_hundred_at_a_time_after_a_cursor(upstream, client):
    page = make_list([make_batch()], has_more=True)
    upstream.get(
        f"{API}/batches",
        json=page,
        match=[matchers.query_param_matcher({"limit": "100", "after": "batch_prev"})],
    )

    assert client.list_batches(after="batch_prev") == page


def test_it_omits_the_cursor_on_the_first_page(upstream, client):
    upstream.get(
        f"{API}/batches", json=make_list([]), match=[matchers.query_param_matcher({"limit": "100"})]
    )

    assert client.list_batches()["data"] == []


def test_it_sends_the_create_body_with_metadata_and_output_expiry(upstream, client):
    created = make_batch(status="validating", metadata={"job": "x"})
    upstream.post(
        f"{API}/batches",
        json=created,
        match=[
            matchers.json_params_matcher(
                {
                    "input_file_id": "file-in123",
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                    "metadata": {"job": "x"},
                    "output_expires_after": {"anchor": "created_at", "seconds": 86400},
                }
            ),
            matchers.header_matcher({"Content-Type": "application/json"}),
        ],
    )

    answer = client.create_batch(
        input_file_id="file-in123",
        endpoint="/v1/chat/completions",
        metadata={"job": "x"},
        output_expires_after_seconds=86400,
    )

    assert answer == created


def test_it_leaves_out_empty_metadata_and_expiry_from_the_create_body(upstream, client):
    upstream.post(
        f"{API}/batches",
        json=make_batch(status="validating"),
        match=[
            matchers.json_params_matcher(
                {
                    "input_file_id": "file-in123",
                    "endpoint": "/v1/embeddings",
                    "completion_window": "24h",
                }
            )
        ],
    )

    client.create_batch(input_file_id="file-in123", endpoint="/v1/embeddings", metadata={})


def test_it_cancels_with_a_post_and_no_body(upstream, client):
    upstream.post(f"{BATCH_URL}/cancel", json=make_batch(status="cancelling"))

    assert client.cancel_batch("batch_abc123")["status"] == "cancelling"
    assert not upstream.calls[0].request.body


class RecordingSession(requests.Session):
    """A real session that remembers the keyword arguments of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict] = []

    def request(self, *args, **kwargs):
        self.sent.append(kwargs)
        return super().request(*args, **kwargs)


def test_it_uploads_a_streamed_multipart_body_with_purpose_batch(upstream, waits):
    session = RecordingSession()
    client = OpenAIClient(
        ClientConfig(api_key=KEY, base_url=API), session=session, sleep=waits.append
    )
    upstream.post(
        f"{API}/files",
        json={
            "id": "file-new1",
            "object": "file",
            "bytes": 26,
            "created_at": 1764000000,
            "filename": "input.jsonl",
            "purpose": "batch",
        },
        match=[matchers.header_matcher({"Content-Type": re.compile(r"^multipart/form-data")})],
    )
    content = b'{"custom_id": "req-1"}\n'

    answer = client.upload_file(
        fileobj=io.BytesIO(content), filename="input.jsonl", expires_after_seconds=3600
    )

    assert answer["id"] == "file-new1"
    # Handed to requests as a streaming encoder that reads the file as it goes, not as bytes.
    data = session.sent[0]["data"]
    assert not isinstance(data, bytes | str)
    assert callable(getattr(data, "read", None))
    assert data.content_type.startswith("multipart/form-data; boundary=")
    # responses drains the stream into the recorded request: the wire bytes.
    sent = upstream.calls[0].request.body
    assert b'name="purpose"\r\n\r\nbatch\r\n' in sent
    assert b'name="expires_after[anchor]"\r\n\r\ncreated_at\r\n' in sent
    assert b'name="expires_after[seconds]"\r\n\r\n3600\r\n' in sent
    assert b'filename="input.jsonl"' in sent
    assert content in sent


def test_it_refuses_an_upload_answer_without_an_id(upstream, client):
    upstream.post(f"{API}/files", json={"object": "file"})

    with pytest.raises(BadResponse):
        client.upload_file(fileobj=io.BytesIO(b"{}\n"), filename="x.jsonl")


def test_it_does_not_retry_an_upload(upstream, client, waits):
    upstream.post(f"{API}/files", status=503, json=error_body("overloaded"))

    with pytest.raises(UpstreamUnavailable):
        client.upload_file(fileobj=io.BytesIO(b"{}\n"), filename="x.jsonl")

    assert len(upstream.calls) == 1
    assert waits == []


def test_it_retrieves_deletes_and_streams_files(upstream, client):
    upstream.get(
        f"{API}/files/file-out1",
        json={
            "id": "file-out1",
            "object": "file",
            "bytes": 4,
            "created_at": 1764000000,
            "filename": "out.jsonl",
            "purpose": "batch_output",
        },
    )
    upstream.delete(
        f"{API}/files/file-out1", json={"id": "file-out1", "object": "file", "deleted": True}
    )
    upstream.get(f"{API}/files/file-out1/content", body=b'{"a": 1}\n{"b": 2}\n')

    assert client.retrieve_file("file-out1")["filename"] == "out.jsonl"
    assert b"".join(client.iter_file_content("file-out1", chunk_size=4)) == b'{"a": 1}\n{"b": 2}\n'
    assert client.delete_file("file-out1")["deleted"] is True


@pytest.mark.parametrize(
    "bad_id", ["batch/../files", "batch_1/cancel", "a?b=1", "a#b", "a%2F", "", " x"]
)
def test_it_refuses_ids_that_would_change_the_path(upstream, client, bad_id):
    with pytest.raises(InvalidRequest):
        client.retrieve_batch(bad_id)
    with pytest.raises(InvalidRequest):
        client.cancel_batch(bad_id)
    with pytest.raises(InvalidRequest):
        client.retrieve_file(bad_id)

    assert len(upstream.calls) == 0


# --- Errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, InvalidRequest),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (422, InvalidRequest),
        (429, RateLimited),
        (500, UpstreamUnavailable),
    ],
)
def test_it_raises_one_error_class_per_status(upstream, client, status, error_class):
    upstream.get(
        BATCH_URL,
        status=status,
        json=error_body("Something about this request."),
        headers={"x-request-id": "req_42"},
    )

    with pytest.raises(error_class) as caught:
        client.retrieve_batch("batch_abc123")

    error = caught.value
    assert isinstance(error, OpenAIError)
    assert error.status == status
    assert error.request_id == "req_42"
    text = str(error)
    assert "Something about this request" in text
    assert f"HTTP {status}" in text
    assert "req_42" in text


def test_its_error_message_reads_as_a_sentence(upstream, client):
    upstream.get(
        BATCH_URL,
        status=404,
        json=error_body("No batch found with id 'batch_abc123'.", code="not_found"),
        headers={"x-request-id": "req_404"},
    )

    with pytest.raises(NotFound) as caught:
        client.retrieve_batch("batch_abc123")

    assert str(caught.value) == (
        "The OpenAI API does not know this object (HTTP 404): "
        "No batch found with id 'batch_abc123'. Request id req_404."
    )
    assert caught.value.code == "not_found"


def test_it_reads_an_error_that_has_only_a_message(upstream, client):
    upstream.get(BATCH_URL, status=400, json={"message": "bad gateway input"})

    with pytest.raises(InvalidRequest, match="bad gateway input"):
        client.retrieve_batch("batch_abc123")


def test_it_falls_back_to_the_reason_for_an_error_without_json(upstream, client):
    upstream.get(BATCH_URL, status=403, body="<html>Forbidden</html>")

    with pytest.raises(AuthError, match="HTTP 403"):
        client.retrieve_batch("batch_abc123")


def test_it_reads_an_azure_error_that_has_only_a_code_and_a_message(upstream, client):
    upstream.get(
        BATCH_URL,
        status=404,
        json={
            "error": {
                "code": "DeploymentNotFound",
                "message": "The API deployment for this resource does not exist.",
            }
        },
        headers={"x-request-id": "req_az"},
    )

    with pytest.raises(NotFound) as caught:
        client.retrieve_batch("batch_abc123")

    assert caught.value.code == "DeploymentNotFound"
    assert str(caught.value) == (
        "The OpenAI API does not know this object (HTTP 404): "
        "The API deployment for this resource does not exist. Request id req_az."
    )


def test_it_reads_azures_top_level_status_code_and_message(upstream, client):
    # Azure's gateway answers a bad key this way, without an `error` object.
    upstream.get(
        BATCH_URL,
        status=401,
        json={"statusCode": 401, "message": "Access denied due to invalid subscription key."},
    )

    with pytest.raises(AuthError, match="Access denied due to invalid subscription key"):
        client.retrieve_batch("batch_abc123")


NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@pytest.mark.parametrize(
    ("status", "error_class", "phrase"),
    [
        (502, UpstreamUnavailable, "Bad Gateway"),
        (400, InvalidRequest, "Bad Request"),
        (403, AuthError, "Forbidden"),
    ],
)
def test_an_html_page_from_a_proxy_gives_a_readable_message(
    upstream, client, status, error_class, phrase
):
    upstream.get(
        BATCH_URL,
        status=status,
        body=NGINX_502,
        content_type="text/html",
        headers={"x-request-id": "req_proxy"},
    )

    with pytest.raises(error_class) as caught:
        client.retrieve_batch("batch_abc123")

    text = str(caught.value)
    assert text == f"{error_class.title} (HTTP {status}): {phrase}. Request id req_proxy."
    assert "<" not in text and "nginx" not in text


def test_an_html_error_without_a_reason_phrase_uses_the_standard_one():
    # HTTP/2 carries no reason phrase; a proxy may send an empty one.
    response = requests.Response()
    response.status_code = 504
    response.reason = ""
    response._content = b"<html><body>upstream timed out</body></html>"

    error = _error_from_response(response, ClientConfig(api_key=KEY, base_url=API))

    assert isinstance(error, UpstreamUnavailable)
    assert error.message == "Gateway Timeout"


def test_it_raises_bad_response_for_a_200_that_is_not_json(upstream, client):
    upstream.get(BATCH_URL, body="<html>gateway login</html>", headers={"x-request-id": "req_h"})

    with pytest.raises(BadResponse) as caught:
        client.retrieve_batch("batch_abc123")

    assert "not JSON" in str(caught.value)
    assert "req_h" in str(caught.value)


def test_it_raises_bad_response_for_json_that_is_not_an_object(upstream, client):
    upstream.get(BATCH_URL, json=["batch_abc123"])

    with pytest.raises(BadResponse, match="not a JSON object"):
        client.retrieve_batch("batch_abc123")


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        ("", "application/json", "the answer is empty"),
        ("<!DOCTYPE html><html><form>Sign in</form></html>", "text/html", "an HTML page"),
        ('{"object": "batch", "id": "batch_', "application/json", "the answer is not JSON"),
    ],
    ids=["empty", "html", "cut-off"],
)
def test_an_unreadable_2xx_says_why_and_counts_as_maybe_carried_out(
    upstream, client, body, content_type, words
):
    upstream.post(f"{API}/batches", body=body, content_type=content_type)

    with pytest.raises(BadResponse) as caught:
        client.create_batch(input_file_id="file-abc", endpoint="/v1/chat/completions")

    assert words in str(caught.value)
    assert "<" not in str(caught.value)
    assert caught.value.ambiguous  # a create is looked for before it is reported as failed


def test_a_200_carrying_an_error_object_raises_with_its_message(upstream, client):
    upstream.get(BATCH_URL, json={"error": {"message": "Upstream overloaded", "type": "x"}})

    with pytest.raises(BadResponse) as caught:
        client.retrieve_batch("batch_abc123")

    assert "an error instead of a result: Upstream overloaded" in str(caught.value)
    assert caught.value.ambiguous


def test_it_raises_bad_response_for_an_object_that_is_not_a_batch(upstream, client):
    upstream.get(BATCH_URL, json={"object": "batch"})

    with pytest.raises(BadResponse, match="not a batch"):
        client.retrieve_batch("batch_abc123")


@pytest.mark.parametrize("page", [{"object": "list"}, {"object": "list", "data": None}])
def test_it_raises_bad_response_for_a_list_without_data(upstream, client, page):
    upstream.get(f"{API}/batches", json=page)

    with pytest.raises(BadResponse, match="no `data` list"):
        client.list_batches()


def test_it_never_puts_the_key_in_errors_or_logs_even_when_upstream_echoes_it(
    upstream, client, caplog
):
    caplog.set_level(logging.DEBUG)
    echoed = f"Incorrect API key provided: {KEY}. You can find your API key at example."
    upstream.get(BATCH_URL, status=401, json=error_body(echoed, code="invalid_api_key"))
    upstream.get(f"{API}/batches", status=429, json=error_body(f"slow down {KEY}"))
    upstream.post(f"{BATCH_URL}/cancel", body=requests.exceptions.ConnectionError(f"refused {KEY}"))

    errors = []
    for call in (
        lambda: client.retrieve_batch("batch_abc123"),
        lambda: client.list_batches(),
        lambda: client.cancel_batch("batch_abc123"),
    ):
        with pytest.raises(OpenAIError) as caught:
            call()
        errors.append(caught.value)

    assert "Incorrect API key provided: ***" in str(errors[0])
    for error in errors:
        assert KEY not in str(error)
        assert KEY not in repr(error)
        assert KEY not in error.message
    assert caplog.records, "the client logs its calls"
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in caplog.text


# --- Retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["list", "retrieve", "cancel"])
@pytest.mark.parametrize("status", RETRIED_STATUSES)
def test_it_retries_transient_statuses_twice_then_raises(
    upstream, client, waits, operation, status
):
    method, url = OPERATIONS[operation]
    upstream.add(method, url, status=status, json=error_body("try again"))

    with pytest.raises(OpenAIError) as caught:
        call_each(client, operation)

    assert caught.value.status == status
    assert len(upstream.calls) == 3
    assert len(waits) == 2


@pytest.mark.parametrize("operation", ["list", "retrieve", "cancel"])
def test_it_succeeds_when_a_retry_does(upstream, client, waits, operation):
    method, url = OPERATIONS[operation]
    upstream.add(method, url, status=503, json=error_body("busy"))
    upstream.add(method, url, json=ok_body(operation))

    assert call_each(client, operation) == ok_body(operation)
    assert len(upstream.calls) == 2
    assert len(waits) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_it_does_not_retry_client_errors(upstream, client, waits, status):
    upstream.get(BATCH_URL, status=status, json=error_body("no"))

    with pytest.raises(OpenAIError):
        client.retrieve_batch("batch_abc123")

    assert len(upstream.calls) == 1
    assert waits == []


def test_it_retries_a_429_after_the_retry_after_ms_header(upstream, client, waits):
    upstream.get(BATCH_URL, status=429, json=error_body("slow"), headers={"retry-after-ms": "1500"})
    upstream.get(BATCH_URL, json=make_batch())

    client.retrieve_batch("batch_abc123")

    assert waits == [1.5]


def test_it_retries_a_429_after_the_retry_after_header_in_seconds(upstream, client, waits):
    upstream.get(BATCH_URL, status=429, json=error_body("slow"), headers={"retry-after": "7"})
    upstream.get(BATCH_URL, status=429, json=error_body("slow"), headers={"retry-after": "0"})
    upstream.get(BATCH_URL, json=make_batch())

    client.retrieve_batch("batch_abc123")

    assert waits == [7.0, 0.0]


def test_it_prefers_retry_after_ms_to_retry_after(upstream, client, waits):
    upstream.get(
        BATCH_URL,
        status=503,
        json=error_body("busy"),
        headers={"retry-after-ms": "250", "retry-after": "30"},
    )
    upstream.get(BATCH_URL, json=make_batch())

    client.retrieve_batch("batch_abc123")

    assert waits == [0.25]


def test_it_retries_a_429_after_the_retry_after_header_as_an_http_date(upstream, client, waits):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    upstream.get(BATCH_URL, status=429, json=error_body("slow"), headers={"retry-after": when})
    upstream.get(BATCH_URL, json=make_batch())

    client.retrieve_batch("batch_abc123")

    assert len(waits) == 1
    assert 27 <= waits[0] <= 30


def test_an_http_date_in_the_past_means_no_wait():
    past = email.utils.formatdate(time.time() - 600, usegmt=True)

    assert retry_after_seconds({"retry-after": past}) == 0.0


@pytest.mark.parametrize("junk", ["soon", "", "Thu, 99 Foo 20x"])
def test_a_junk_retry_after_falls_back_to_backoff(upstream, client, waits, junk):
    assert retry_after_seconds({"retry-after": junk}) is None
    upstream.get(BATCH_URL, status=429, json=error_body("slow"), headers={"retry-after": junk})
    upstream.get(BATCH_URL, json=make_batch())

    client.retrieve_batch("batch_abc123")

    assert len(waits) == 1
    assert 0.75 * INITIAL_BACKOFF <= waits[0] <= INITIAL_BACKOFF


def test_it_backs_off_exponentially_with_jitter_without_retry_after(upstream, client, waits):
    upstream.get(BATCH_URL, status=500, json=error_body("oops"))

    with pytest.raises(UpstreamUnavailable):
        client.retrieve_batch("batch_abc123")

    assert len(waits) == 2
    assert 0.375 <= waits[0] <= 0.5
    assert 0.75 <= waits[1] <= 1.0


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_doubles_from_half_a_second_to_eight_minus_a_quarter_jitter(attempt):
    ceiling = min(INITIAL_BACKOFF * 2**attempt, MAX_BACKOFF)
    for _ in range(50):
        delay = backoff_seconds(attempt)
        assert 0.75 * ceiling <= delay <= ceiling
    assert backoff_seconds(attempt) <= MAX_BACKOFF


def test_it_does_not_retry_when_retry_after_is_over_two_minutes(upstream, client, waits):
    upstream.get(
        f"{API}/batches", status=429, json=error_body("slow"), headers={"retry-after": "121"}
    )

    with pytest.raises(RateLimited) as caught:
        client.list_batches()

    assert len(upstream.calls) == 1
    assert waits == []
    assert caught.value.retry_after == 121.0


def test_it_waits_exactly_two_minutes_when_asked(upstream, client, waits):
    upstream.get(BATCH_URL, status=429, json=error_body("slow"), headers={"retry-after": "120"})
    upstream.get(BATCH_URL, json=make_batch())

    client.retrieve_batch("batch_abc123")

    assert waits == [120.0]


def test_it_does_not_retry_an_exhausted_quota(upstream, client, waits):
    upstream.get(
        BATCH_URL,
        status=429,
        json=error_body("You exceeded your current quota.", code="insufficient_quota"),
    )

    with pytest.raises(RateLimited) as caught:
        client.retrieve_batch("batch_abc123")

    assert caught.value.quota_exhausted
    assert len(upstream.calls) == 1
    assert waits == []


@pytest.mark.parametrize("operation", ["list", "retrieve", "cancel"])
@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (requests.exceptions.ReadTimeout("read timed out"), "within the time limit"),
        (requests.exceptions.ConnectTimeout("connect timed out"), "within the time limit"),
        (requests.exceptions.ConnectionError("refused"), "could not connect"),
        (requests.exceptions.ConnectionError("Connection aborted."), "could not connect"),
    ],
    ids=["read-timeout", "connect-timeout", "refused", "aborted"],
)
def test_it_retries_transport_failures_then_raises_upstream_unavailable(
    upstream, client, waits, operation, failure, words
):
    method, url = OPERATIONS[operation]
    upstream.add(method, url, body=failure)

    with pytest.raises(UpstreamUnavailable) as caught:
        call_each(client, operation)

    assert len(upstream.calls) == 3
    assert len(waits) == 2
    assert words in str(caught.value)
    assert API in str(caught.value)
    assert caught.value.status is None


def test_a_timeout_message_names_the_time_limits(upstream, waits):
    config = ClientConfig(api_key=KEY, base_url=API, connect_timeout=3, read_timeout=20)
    client = OpenAIClient(config, sleep=waits.append)
    upstream.get(BATCH_URL, body=requests.exceptions.ReadTimeout())

    with pytest.raises(UpstreamUnavailable) as caught:
        client.retrieve_batch("batch_abc123")

    assert str(caught.value) == (
        "The OpenAI API is not available right now: no answer from https://api.openai.test/v1 "
        "within the time limit (connect 3 s, read 20 s)."
    )


def test_it_sends_connect_and_read_timeouts_on_every_call(upstream, waits):
    session = RecordingSession()
    config = ClientConfig(api_key=KEY, base_url=API, connect_timeout=4, read_timeout=30)
    client = OpenAIClient(config, session=session, sleep=waits.append)
    upstream.get(BATCH_URL, status=503, json=error_body("busy"))
    upstream.get(BATCH_URL, json=make_batch())

    client.retrieve_batch("batch_abc123")

    assert [kwargs["timeout"] for kwargs in session.sent] == [(4, 30), (4, 30)]


def test_it_recovers_from_a_timeout_on_a_retry(upstream, client, waits):
    upstream.get(BATCH_URL, body=requests.exceptions.ReadTimeout())
    upstream.get(BATCH_URL, json=make_batch())

    assert client.retrieve_batch("batch_abc123")["id"] == "batch_abc123"
    assert len(waits) == 1


def test_it_honours_a_smaller_max_retries(upstream, waits):
    client = OpenAIClient(
        ClientConfig(api_key=KEY, base_url=API, max_retries=0), sleep=waits.append
    )
    upstream.get(BATCH_URL, status=503, json=error_body("busy"))

    with pytest.raises(UpstreamUnavailable):
        client.retrieve_batch("batch_abc123")

    assert len(upstream.calls) == 1


def test_the_settings_client_sleeps_through_the_no_sleep_fixture(upstream, no_sleep):
    upstream.get(BATCH_URL, status=502, json=error_body("bad gateway"))
    upstream.get(BATCH_URL, json=make_batch())

    OpenAIClient.from_settings().retrieve_batch("batch_abc123")

    assert len(no_sleep) == 1


def test_an_interactive_client_retries_once_and_caps_waits_at_the_page_timeout(
    upstream, settings, no_sleep
):
    settings.OPENAI_PAGE_TIMEOUT = 15.0
    upstream.get(BATCH_URL, status=429, json=error_body("slow"), headers={"retry-after": "20"})

    with pytest.raises(RateLimited):
        OpenAIClient.from_settings(interactive=True).retrieve_batch("batch_abc123")

    assert len(upstream.calls) == 1
    assert no_sleep == []


# --- Create: retried only where nothing can have happened upstream ---------------------------


def create(client: OpenAIClient):
    return client.create_batch(input_file_id="file-in123", endpoint="/v1/chat/completions")


def test_create_is_retried_on_a_429(upstream, client, waits):
    upstream.post(
        f"{API}/batches", status=429, json=error_body("slow"), headers={"retry-after": "2"}
    )
    upstream.post(f"{API}/batches", json=make_batch(status="validating"))

    assert create(client)["status"] == "validating"
    assert len(upstream.calls) == 2
    assert waits == [2.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409])
def test_create_is_not_retried_on_a_server_error_or_conflict(upstream, client, waits, status):
    upstream.post(f"{API}/batches", status=status, json=error_body("hmm"))

    with pytest.raises(OpenAIError) as caught:
        create(client)

    assert len(upstream.calls) == 1
    assert waits == []
    assert caught.value.ambiguous is (status != 409)


def test_create_is_not_retried_on_a_read_timeout_and_is_marked_ambiguous(upstream, client, waits):
    upstream.post(f"{API}/batches", body=requests.exceptions.ReadTimeout())

    with pytest.raises(UpstreamUnavailable) as caught:
        create(client)

    assert len(upstream.calls) == 1
    assert waits == []
    assert caught.value.ambiguous


def test_create_is_not_retried_after_a_dropped_connection(upstream, client, waits):
    upstream.post(f"{API}/batches", body=requests.exceptions.ConnectionError("Connection aborted."))

    with pytest.raises(UpstreamUnavailable) as caught:
        create(client)

    assert len(upstream.calls) == 1
    assert caught.value.ambiguous


@pytest.mark.parametrize(
    "failure",
    [requests.exceptions.ConnectTimeout(), requests.exceptions.ConnectionError("refused")],
    ids=["connect-timeout", "refused"],
)
def test_create_is_retried_when_the_connection_never_opened(upstream, client, waits, failure):
    upstream.post(f"{API}/batches", body=failure)
    upstream.post(f"{API}/batches", json=make_batch(status="validating"))

    assert create(client)["status"] == "validating"
    assert len(upstream.calls) == 2


def test_create_that_never_connects_is_not_ambiguous(upstream, client, waits):
    upstream.post(f"{API}/batches", body=requests.exceptions.ConnectionError("refused"))

    with pytest.raises(UpstreamUnavailable) as caught:
        create(client)

    assert len(upstream.calls) == 3
    assert not caught.value.ambiguous


def test_a_400_on_create_is_not_ambiguous(upstream, client, waits):
    upstream.post(f"{API}/batches", status=400, json=error_body("bad file"))

    with pytest.raises(InvalidRequest) as caught:
        create(client)

    assert not caught.value.ambiguous
    assert len(upstream.calls) == 1


@pytest.mark.parametrize(
    "body",
    [
        # Azure, in regions where create itself refuses: the code only in the message.
        {
            "error": {
                "code": "invalid_request_error",
                "message": "Enqueued token limit reached for gpt-4o-mini (token_limit_exceeded).",
            }
        },
        {"error": {"code": None, "message": "token_limit_exceeded: queue full", "type": None}},
        {"error": {"code": "TokenLimitExceeded", "message": "Too many enqueued tokens."}},
        error_body("Enqueued token limit reached.", code="token_limit_exceeded"),
        {"message": "Token limit exceeded for deployment gpt-4o-batch."},
    ],
    ids=["in-message", "message-no-code", "camel-code", "in-code", "bare-message"],
)
def test_a_create_refused_for_the_token_limit_has_one_code(upstream, client, waits, body):
    upstream.post(f"{API}/batches", status=400, json=body)

    with pytest.raises(InvalidRequest) as caught:
        create(client)

    assert caught.value.code == TOKEN_LIMIT_EXCEEDED == "token_limit_exceeded"
    assert not caught.value.ambiguous
    assert len(upstream.calls) == 1
    assert waits == []


def test_another_400_keeps_its_own_code(upstream, client):
    upstream.post(
        f"{API}/batches",
        status=400,
        json=error_body("Input file is not a batch file.", code="invalid_file"),
    )

    with pytest.raises(InvalidRequest) as caught:
        create(client)

    assert caught.value.code == "invalid_file"


def test_every_request_in_this_module_matches_the_openapi_file(upstream, client):
    # The fixture validates at teardown; this makes one of each call to be sure they all pass.
    upstream.get(f"{API}/batches", json=make_list([]))
    upstream.get(BATCH_URL, json=make_batch())
    upstream.post(f"{BATCH_URL}/cancel", json=make_batch(status="cancelling"))
    upstream.post(f"{API}/batches", json=make_batch(status="validating"))

    client.list_batches(after="batch_x", limit=5)
    client.retrieve_batch("batch_abc123")
    client.cancel_batch("batch_abc123")
    create(client)

    assert len(upstream.calls) == 4
    assert isinstance(upstream, responses.RequestsMock)
