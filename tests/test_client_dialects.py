"""The client's three dialects: OpenAI, Azure's v1 API and Azure's dated API.

Each test runs inside its own `responses.RequestsMock()` (the `api` fixture): a call to a URL no
test registered fails, and a registered call that never came fails too. At the end of each test
every request sent is checked against the OpenAPI copy, with Azure's root and `api-version`
taken off (the paths, parameters and bodies are OpenAI's in every dialect).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
import responses
from responses import matchers

from batches.openai_client import (
    AUTH_STYLES,
    DIALECTS,
    AuthError,
    ClientConfig,
    InvalidRequest,
    OpenAIClient,
    OpenAIError,
)
from tests.conftest import make_batch, make_list
from tests.openapi import validate_request

KEY = "sk-dialect-test-key-never-shown"
VERSION = "2024-10-21"
OPENAI = "https://api.openai.test/v1"
RESOURCE = "https://res-sweden.openai.azure.com"
AZURE_V1 = f"{RESOURCE}/openai/v1"
# Where each dialect's paths hang, given the base URL a person configures.
ROOTS = {"openai": OPENAI, "azure": AZURE_V1, "azure-legacy": f"{RESOURCE}/openai"}
BASE_URLS = {"openai": OPENAI, "azure": AZURE_V1, "azure-legacy": RESOURCE}
SPEC_ROOT = "https://api.openai.com/v1"
NOON = 1719835200  # 2024-07-01T12:00:00Z


def make_client(dialect: str, **changes: Any) -> OpenAIClient:
    options: dict[str, Any] = {
        "api_key": KEY,
        "base_url": BASE_URLS[dialect],
        "dialect": dialect,
        "auth_style": "bearer" if dialect == "openai" else "api-key",
        **changes,
    }
    return OpenAIClient(ClientConfig(**options), sleep=lambda _seconds: None)


def query(dialect: str, params: dict[str, str] | None = None) -> list:
    """The matcher for a call's exact query: the dated API adds its version to every call."""
    expected = dict(params or {})
    if dialect == "azure-legacy":
        expected["api-version"] = VERSION
    return [matchers.query_param_matcher(expected)]


def spec_view(url: str) -> str:
    """The URL as OpenAI's OpenAPI file spells it: Azure's root and api-version taken off."""
    match = re.match(r"^https://[^/]+(?:/openai)?(?:/v1)?(/(?:batches|files)\S*)$", url)
    assert match, f"{url} is not under a known root"
    parts = urlsplit(match.group(1))
    params = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "api-version"
    ]
    return SPEC_ROOT + parts.path + (f"?{urlencode(params)}" if params else "")


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock
        for call in mock.calls:
            request = call.request
            validate_request(request.method, spec_view(request.url), request.body, request.headers)


def azure_batch(**changes: Any) -> dict[str, Any]:
    """A Batch as Microsoft's examples show it: ISO times, capitalised status, "" for absent
    file ids, null endpoint and request counts, no model or usage."""
    payload = {
        "id": "batch_abc123",
        "object": "batch",
        "endpoint": None,
        "errors": None,
        "input_file_id": "file-in123",
        "completion_window": "24h",
        "status": "Validating",
        "output_file_id": "",
        "error_file_id": "",
        "created_at": "2024-07-01T12:00:00Z",
        "in_progress_at": None,
        "expires_at": "2024-07-02T12:00:00.0000000Z",
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": None, "completed": None, "failed": None},
        "metadata": None,
    }
    payload.update(changes)
    return payload


def normalized_azure_batch(**changes: Any) -> dict[str, Any]:
    """What the client makes of `azure_batch()`."""
    payload = azure_batch(
        status="validating",
        output_file_id=None,
        error_file_id=None,
        created_at=NOON,
        expires_at=NOON + 86400,
    )
    payload.update(changes)
    return payload


def file_object(**changes: Any) -> dict[str, Any]:
    payload = {
        "id": "file-new1",
        "object": "file",
        "bytes": 26,
        "created_at": NOON,
        "filename": "input.jsonl",
        "purpose": "batch",
        "status": "processed",
    }
    payload.update(changes)
    return payload


# --- configuration ------------------------------------------------------------------------------


def test_the_dialects_and_auth_styles_are_exported() -> None:
    assert DIALECTS == ("openai", "azure", "azure-legacy")
    assert AUTH_STYLES == ("bearer", "api-key")


def test_the_defaults_are_openais_with_a_bearer_key() -> None:
    config = ClientConfig(api_key=KEY)

    assert (config.dialect, config.auth_style, config.api_version) == (
        "openai",
        "bearer",
        "2024-10-21",
    )


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"dialect": "azure_legacy"}, "dialect must be one of openai, azure, azure-legacy"),
        ({"dialect": ""}, "dialect must be one of"),
        ({"auth_style": "apikey"}, "auth_style must be one of bearer, api-key"),
    ],
)
def test_an_unknown_dialect_or_auth_style_is_refused_at_once(changes: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        ClientConfig(api_key=KEY, **changes)

    assert KEY not in str(caught.value)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("auth_style", AUTH_STYLES)
def test_the_config_repr_hides_the_key_in_every_style(dialect: str, auth_style: str) -> None:
    config = ClientConfig(api_key=KEY, dialect=dialect, auth_style=auth_style)

    assert KEY not in repr(config)
    assert dialect in repr(config)


# --- where the calls go -------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_call_goes_to_the_dialects_url_with_its_query(
    api: responses.RequestsMock, dialect: str
) -> None:
    root = ROOTS[dialect]
    batch = f"{root}/batches/batch_abc123"
    api.get(
        f"{root}/batches",
        json=make_list([make_batch()]),
        match=query(dialect, {"after": "batch_prev", "limit": "5"}),
    )
    api.get(batch, json=make_batch(), match=query(dialect))
    api.post(f"{batch}/cancel", json=make_batch(status="cancelling"), match=query(dialect))
    api.post(f"{root}/batches", json=make_batch(status="validating"), match=query(dialect))
    api.post(f"{root}/files", json=file_object(), match=query(dialect))
    api.get(f"{root}/files/file-new1", json=file_object(), match=query(dialect))
    api.get(f"{root}/files/file-new1/content", body=b'{"a": 1}\n', match=query(dialect))
    api.delete(
        f"{root}/files/file-new1",
        json={"id": "file-new1", "object": "file", "deleted": True},
        match=query(dialect),
    )
    client = make_client(dialect)

    client.list_batches(after="batch_prev", limit=5)
    client.retrieve_batch("batch_abc123")
    client.cancel_batch("batch_abc123")
    client.create_batch(input_file_id="file-in123", endpoint="/v1/chat/completions")
    client.upload_file(fileobj=io.BytesIO(b"{}\n"), filename="input.jsonl")
    client.retrieve_file("file-new1")
    assert b"".join(client.iter_file_content("file-new1")) == b'{"a": 1}\n'
    client.delete_file("file-new1")

    assert len(api.calls) == 8


@pytest.mark.parametrize(
    "base_url",
    [RESOURCE, f"{RESOURCE}/", f"{RESOURCE}/openai", f"{RESOURCE}/openai/"],
)
def test_the_dated_api_takes_the_resource_endpoint_with_or_without_openai(
    api: responses.RequestsMock, base_url: str
) -> None:
    api.get(
        f"{RESOURCE}/openai/batches/batch_abc123", json=make_batch(), match=query("azure-legacy")
    )

    make_client("azure-legacy", base_url=base_url).retrieve_batch("batch_abc123")


def test_the_dated_api_sends_the_version_it_is_given(api: responses.RequestsMock) -> None:
    api.get(
        f"{RESOURCE}/openai/batches",
        json=make_list([]),
        match=[matchers.query_param_matcher({"limit": "100", "api-version": "2025-03-01-preview"})],
    )

    make_client("azure-legacy", api_version="2025-03-01-preview").list_batches()


@pytest.mark.parametrize("dialect", ["openai", "azure"])
def test_only_the_dated_api_sends_an_api_version(api: responses.RequestsMock, dialect: str) -> None:
    api.get(f"{ROOTS[dialect]}/batches/batch_abc123", json=make_batch())

    make_client(dialect, api_version="2099-01-01").retrieve_batch("batch_abc123")

    assert "api-version" not in api.calls[0].request.url
    assert "?" not in api.calls[0].request.url


def test_a_retried_call_keeps_its_query(api: responses.RequestsMock) -> None:
    url = f"{RESOURCE}/openai/batches"
    params = {"after": "batch_x", "limit": "100"}
    api.get(
        url, status=503, json={"error": {"message": "busy"}}, match=query("azure-legacy", params)
    )
    api.get(url, json=make_list([]), match=query("azure-legacy", params))

    make_client("azure-legacy").list_batches(after="batch_x")

    assert len(api.calls) == 2


# --- how the key is sent ------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_bearer_style_sends_an_authorization_header(
    api: responses.RequestsMock, dialect: str
) -> None:
    api.get(
        f"{ROOTS[dialect]}/batches/batch_abc123",
        json=make_batch(),
        match=[matchers.header_matcher({"Authorization": f"Bearer {KEY}"})],
    )

    make_client(dialect, auth_style="bearer").retrieve_batch("batch_abc123")

    assert "api-key" not in api.calls[0].request.headers


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_api_key_style_sends_an_api_key_header_and_no_authorization(
    api: responses.RequestsMock, dialect: str
) -> None:
    api.get(
        f"{ROOTS[dialect]}/batches/batch_abc123",
        json=make_batch(),
        match=[matchers.header_matcher({"api-key": KEY, "User-Agent": re.compile(r"^batchweb/")})],
    )

    make_client(dialect, auth_style="api-key").retrieve_batch("batch_abc123")

    headers = api.calls[0].request.headers
    assert "Authorization" not in headers
    assert "OpenAI-Organization" not in headers
    assert "OpenAI-Project" not in headers


@pytest.mark.parametrize("dialect", DIALECTS)
def test_organisation_and_project_headers_are_sent_only_when_set(
    api: responses.RequestsMock, dialect: str
) -> None:
    api.get(
        f"{ROOTS[dialect]}/batches/batch_abc123",
        json=make_batch(),
        match=[matchers.header_matcher({"OpenAI-Organization": "org-1", "OpenAI-Project": "p-1"})],
    )

    make_client(dialect, organization="org-1", project="p-1").retrieve_batch("batch_abc123")


def test_the_api_key_never_reaches_errors_or_logs(
    api: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    root = ROOTS["azure-legacy"]
    echoed = f"Access denied due to invalid subscription key {KEY}. Make sure to provide a key."
    api.get(f"{root}/batches/batch_abc123", status=401, json={"statusCode": 401, "message": echoed})
    api.get(
        f"{root}/batches",
        status=400,
        json={"error": {"code": f"bad-{KEY}", "message": f"api-key: {KEY} rejected"}},
    )
    api.post(
        f"{root}/batches/batch_abc123/cancel",
        body=requests.exceptions.ConnectionError(f"refused api-key={KEY}"),
    )
    client = make_client("azure-legacy", max_retries=0)

    errors = []
    for call in (
        lambda: client.retrieve_batch("batch_abc123"),
        lambda: client.list_batches(),
        lambda: client.cancel_batch("batch_abc123"),
    ):
        with pytest.raises(OpenAIError) as caught:
            call()
        errors.append(caught.value)

    assert isinstance(errors[0], AuthError)
    assert "invalid subscription key ***" in str(errors[0])
    for error in errors:
        assert KEY not in str(error)
        assert KEY not in repr(error)
        assert KEY not in (error.code or "")
    assert caplog.records
    assert KEY not in caplog.text


# --- what is sent -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "anchor", "seconds"),
    [
        ("openai", "expires_after[anchor]", "expires_after[seconds]"),
        ("azure", "expires_after.anchor", "expires_after.seconds"),
        ("azure-legacy", "expires_after.anchor", "expires_after.seconds"),
    ],
)
def test_the_upload_spells_the_expiry_fields_as_the_dialect_does(
    api: responses.RequestsMock, dialect: str, anchor: str, seconds: str
) -> None:
    api.post(
        f"{ROOTS[dialect]}/files",
        json=file_object(),
        match=[
            *query(dialect),
            matchers.header_matcher({"Content-Type": re.compile(r"^multipart/form-data")}),
        ],
    )

    make_client(dialect).upload_file(
        fileobj=io.BytesIO(b"{}\n"), filename="input.jsonl", expires_after_seconds=1_209_600
    )

    sent = api.calls[0].request.body
    assert f'name="{anchor}"\r\n\r\ncreated_at\r\n'.encode() in sent
    assert f'name="{seconds}"\r\n\r\n1209600\r\n'.encode() in sent
    assert b'name="purpose"\r\n\r\nbatch\r\n' in sent
    other = "expires_after." if dialect == "openai" else "expires_after["
    assert other.encode() not in sent


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_create_body_is_the_same_in_every_dialect(
    api: responses.RequestsMock, dialect: str
) -> None:
    api.post(
        f"{ROOTS[dialect]}/batches",
        json=make_batch(status="validating"),
        match=[
            *query(dialect),
            matchers.json_params_matcher(
                {
                    "input_file_id": "file-in123",
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                    "metadata": {"job": "x"},
                    "output_expires_after": {"anchor": "created_at", "seconds": 1_209_600},
                }
            ),
        ],
    )

    make_client(dialect).create_batch(
        input_file_id="file-in123",
        endpoint="/v1/chat/completions",
        metadata={"job": "x"},
        output_expires_after_seconds=1_209_600,
    )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_create_refused_for_enqueued_tokens_says_token_limit_exceeded(
    api: responses.RequestsMock, dialect: str
) -> None:
    api.post(
        f"{ROOTS[dialect]}/batches",
        status=400,
        json={
            "error": {
                "code": "invalid_request",
                "message": "token_limit_exceeded: enqueued tokens for deployment gpt-4o-batch"
                " exceed its quota.",
            }
        },
        match=query(dialect),
    )

    with pytest.raises(InvalidRequest) as caught:
        make_client(dialect).create_batch(input_file_id="file-in123", endpoint="/v1/responses")

    assert caught.value.code == "token_limit_exceeded"
    assert "enqueued tokens for deployment gpt-4o-batch" in str(caught.value)


# --- what comes back ----------------------------------------------------------------------------

VARIANTS = {
    "as-microsoft-shows-it": ({}, {}),
    "in-progress-spelt-InProgress": ({"status": "InProgress"}, {"status": "in_progress"}),
    "in-progress-spelt-In_progress": ({"status": "In_progress"}, {"status": "in_progress"}),
    "canceled": ({"status": "Canceled"}, {"status": "cancelled"}),
    "canceling": ({"status": "Canceling"}, {"status": "cancelling"}),
    "completed": (
        {
            "status": "Completed",
            "completed_at": "2024-07-01T13:00:00.5+00:00",
            "output_file_id": "file-out1",
            "request_counts": {"total": 3, "completed": 3, "failed": 0},
        },
        {
            "status": "completed",
            "completed_at": NOON + 3600,
            "output_file_id": "file-out1",
            "request_counts": {"total": 3, "completed": 3, "failed": 0},
        },
    ),
    "offset-time": (
        {"created_at": "2024-07-01T14:00:00+02:00"},
        {"created_at": NOON},
    ),
    "no-zone": ({"created_at": "2024-07-01T12:00:00"}, {"created_at": NOON}),
    "milliseconds": ({"created_at": NOON * 1000}, {"created_at": NOON}),
    "numeric-string": ({"created_at": str(NOON)}, {"created_at": NOON}),
    "junk-time": ({"in_progress_at": "soon"}, {"in_progress_at": None}),
    "null-request-counts": ({"request_counts": None}, {"request_counts": None}),
    "endpoint-set": (
        {"endpoint": "/v1/chat/completions"},
        {"endpoint": "/v1/chat/completions"},
    ),
    "unknown-key-kept": ({"x_region": "swedencentral"}, {"x_region": "swedencentral"}),
}


def answer_with(
    api: responses.RequestsMock, dialect: str, operation: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Make one call whose answer is `payload` (or a page holding it), return the batch."""
    root = ROOTS[dialect]
    client = make_client(dialect)
    if operation == "list":
        page = {"object": "list", "data": [payload], "first_id": "b", "last_id": "b"}
        api.get(f"{root}/batches", json=page, match=query(dialect, {"limit": "100"}))
        return client.list_batches()["data"][0]
    if operation == "retrieve":
        api.get(f"{root}/batches/batch_abc123", json=payload, match=query(dialect))
        return client.retrieve_batch("batch_abc123")
    if operation == "cancel":
        api.post(f"{root}/batches/batch_abc123/cancel", json=payload, match=query(dialect))
        return client.cancel_batch("batch_abc123")
    api.post(f"{root}/batches", json=payload, match=query(dialect))
    return client.create_batch(input_file_id="file-in123", endpoint="/v1/chat/completions")


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("operation", ["list", "retrieve", "cancel", "create"])
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_every_batch_answer_comes_out_in_openais_shape(
    api: responses.RequestsMock, dialect: str, operation: str, variant: str
) -> None:
    sent, expected = VARIANTS[variant]

    batch = answer_with(api, dialect, operation, azure_batch(**sent))

    assert batch == normalized_azure_batch(**expected)
    assert "model" not in batch and "usage" not in batch


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_list_page_drops_rows_that_are_not_batches(
    api: responses.RequestsMock, dialect: str
) -> None:
    page = {"object": "list", "data": [azure_batch(), None, "batch_x"], "has_more": False}
    api.get(f"{ROOTS[dialect]}/batches", json=page, match=query(dialect, {"limit": "100"}))

    answer = make_client(dialect).list_batches()

    assert answer["data"] == [normalized_azure_batch()]
    assert answer["has_more"] is False


@pytest.mark.parametrize("dialect", DIALECTS)
def test_file_answers_come_out_in_openais_shape(api: responses.RequestsMock, dialect: str) -> None:
    azure_file = file_object(created_at="2024-07-01T12:00:00Z", status="Processed", bytes="26")
    api.post(f"{ROOTS[dialect]}/files", json=azure_file, match=query(dialect))
    api.get(f"{ROOTS[dialect]}/files/file-new1", json=azure_file, match=query(dialect))
    client = make_client(dialect)

    uploaded = client.upload_file(fileobj=io.BytesIO(b"{}\n"), filename="input.jsonl")
    retrieved = client.retrieve_file("file-new1")

    assert uploaded == retrieved == file_object()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_openai_answer_comes_back_unchanged(api: responses.RequestsMock, dialect: str) -> None:
    api.get(f"{ROOTS[dialect]}/batches/batch_abc123", json=make_batch(), match=query(dialect))

    assert make_client(dialect).retrieve_batch("batch_abc123") == make_batch()


# --- the OpenAPI check itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{OPENAI}/batches?limit=5", f"{SPEC_ROOT}/batches?limit=5"),
        (f"{AZURE_V1}/batches/b1/cancel", f"{SPEC_ROOT}/batches/b1/cancel"),
        (
            f"{RESOURCE}/openai/batches?after=b1&api-version={VERSION}",
            f"{SPEC_ROOT}/batches?after=b1",
        ),
        (
            f"{RESOURCE}/openai/files/f1/content?api-version={VERSION}",
            f"{SPEC_ROOT}/files/f1/content",
        ),
    ],
)
def test_requests_are_checked_against_openais_paths(url: str, expected: str) -> None:
    assert spec_view(url) == expected


def test_the_openapi_check_catches_a_bad_request() -> None:
    # The `api` fixture would let a wrong body through if spec_view mapped it away.
    with pytest.raises(Exception, match="completion_window"):
        validate_request(
            "POST",
            spec_view(f"{AZURE_V1}/batches"),
            json.dumps({"input_file_id": "f", "endpoint": "/v1/responses"}),
        )
