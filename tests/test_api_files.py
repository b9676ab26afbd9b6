"""/v1/files: the same full check as the upload form before anything is sent (a bad file is
refused naming its first problems by line; one over the connection's limits is refused), the
upload forwarded and recorded, a file and its content read back; and the OpenAPI document of
/v1/ served at /v1/openapi.yaml."""

from __future__ import annotations

import json

import pytest
import yaml
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from api.models import ApiFile
from api.services.tokens import token_create
from batches.models import Batch, Connection, Event, default_connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch
from tests.openapi import spec, validate_response

pytestmark = pytest.mark.django_db

API = settings.OPENAI_BASE_URL
UPLOADED = {
    "id": "file-up1",
    "object": "file",
    "bytes": 0,
    "created_at": 1_760_000_000,
    "filename": "in.jsonl",
    "purpose": "batch",
    "status": "processed",
}


def line(custom_id: str, **changes) -> str:
    request = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        **changes,
    }
    return json.dumps(request) + "\n"


GOOD = (line("a") + line("b")).encode()


@pytest.fixture
def submit_token(submitter) -> str:
    return token_create(user=submitter, name="script", scope="submit", days=30).plain


def upload(client, plain: str, content: bytes, *, purpose: str = "batch", name="in.jsonl"):
    return client.post(
        "/v1/files",
        {"purpose": purpose, "file": SimpleUploadedFile(name, content, "application/jsonl")},
        headers={"Authorization": f"Bearer {plain}"},
    )


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    return response.json()["error"]


def test_a_good_file_is_checked_uploaded_and_recorded(client, upstream, submitter, submit_token):
    upstream.post(f"{API}/files", json={**UPLOADED, "bytes": len(GOOD)})

    response = upload(client, submit_token, GOOD)

    assert response.status_code == 200
    validate_response("POST", "/v1/files", response.json())
    [call] = upstream.calls
    assert call.request.url == f"{API}/files"
    facts = ApiFile.objects.get()
    assert (facts.file_id, facts.lines, facts.bytes, facts.model, facts.endpoint) == (
        "file-up1",
        2,
        len(GOOD),
        "gpt-4o-mini",
        "/v1/chat/completions",
    )
    event = Event.objects.get(action=Event.Action.UPLOAD)
    assert (
        event.user == submitter and "file-up1" in event.detail and "via API token" in event.detail
    )


def test_a_bad_file_is_refused_naming_its_first_problems_by_line_and_nothing_is_sent(
    client, upstream, submitter, submit_token
):
    bad = line("a") + "not json\n" + line("a") + line("c", method="GET")

    response = upload(client, submit_token, bad.encode())

    error = error_of(response, 400)
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "file",
        "invalid_batch_file",
    )
    assert "line 2:" in error["message"] and "line 3:" in error["message"]
    assert "line 4:" in error["message"]
    assert not upstream.calls and not ApiFile.objects.exists()
    event = Event.objects.get(action=Event.Action.UPLOAD_FAILED)
    assert event.user == submitter and event.target == "in.jsonl" and "line 2:" in event.detail


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        ({"max_file_bytes": 100}, "file_too_large"),
        ({"max_requests_per_file": 1}, "too_many_requests"),
    ],
)
def test_a_file_over_the_connection_s_limits_is_refused(
    client, upstream, submit_token, limits, code
):
    Connection.objects.filter(pk=default_connection().pk).update(**limits)

    response = upload(client, submit_token, GOOD + line("c").encode())

    error = error_of(response, 400)
    assert (error["param"], error["code"]) == ("file", code)
    assert not upstream.calls and not ApiFile.objects.exists()
    assert Event.objects.filter(action=Event.Action.UPLOAD_FAILED).count() == 1


def test_only_batch_files_are_taken(client, upstream, submit_token):
    error = error_of(upload(client, submit_token, GOOD, purpose="fine-tune"), 400)

    assert (error["param"], error["code"]) == ("purpose", "invalid_value")
    assert not upstream.calls


def test_a_post_without_a_file_is_a_400(client, upstream, submit_token):
    response = client.post(
        "/v1/files", {"purpose": "batch"}, headers={"Authorization": f"Bearer {submit_token}"}
    )

    assert error_of(response, 400)["param"] == "file"


def test_a_read_token_cannot_upload(client, upstream, viewer):
    plain = token_create(user=viewer, name="r", scope="read", days=7).plain

    assert error_of(upload(client, plain, GOOD), 403)["code"] == "insufficient_scope"
    assert not upstream.calls


def test_a_batch_made_from_an_uploaded_file_keeps_what_its_check_found(
    client, upstream, submitter, submit_token
):
    upstream.post(f"{API}/files", json={**UPLOADED, "bytes": len(GOOD)})
    upstream.post(f"{API}/batches", json=make_batch(id="batch_f", input_file_id="file-up1"))
    upload(client, submit_token, GOOD)

    response = client.post(
        "/v1/batches",
        {
            "input_file_id": "file-up1",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        content_type="application/json",
        headers={"Authorization": f"Bearer {submit_token}"},
    )
    wrong = client.post(
        "/v1/batches",
        {"input_file_id": "file-up1", "endpoint": "/v1/embeddings", "completion_window": "24h"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {submit_token}"},
    )

    assert response.status_code == 200
    batch = Batch.objects.get()
    assert (batch.input_filename, batch.input_lines, batch.input_bytes) == (
        "in.jsonl",
        2,
        len(GOOD),
    )
    assert error_of(wrong, 400)["code"] == "endpoint_mismatch"


def test_a_file_and_its_content_are_read_back(client, upstream, viewer):
    # A Viewer's token reads the files of the batches they may see (tests/test_upstream_ids.py).
    batch_upsert(payload=make_batch(id="batch_f", input_file_id="file-up1"))
    plain = token_create(user=viewer, name="r", scope="read", days=7).plain
    upstream.get(f"{API}/files/file-up1", json=UPLOADED)
    upstream.get(
        f"{API}/files/file-up1/content", body=GOOD, content_type="application/octet-stream"
    )
    headers = {"Authorization": f"Bearer {plain}"}

    info = client.get("/v1/files/file-up1", headers=headers)
    content = client.get("/v1/files/file-up1/content", headers=headers)

    assert info.status_code == 200
    validate_response("GET", "/v1/files/file-up1", info.json())
    assert content.status_code == 200 and b"".join(content.streaming_content) == GOOD
    event = Event.objects.get(action=Event.Action.DOWNLOAD)
    assert event.user == viewer and event.target == "file-up1"


def test_the_content_of_an_unknown_file_is_a_404(client, upstream, viewer):
    batch_upsert(payload=make_batch(id="batch_x", input_file_id="file-x"))  # gone upstream
    plain = token_create(user=viewer, name="r", scope="read", days=7).plain
    upstream.get(f"{API}/files/file-x/content", status=404, json={"error": {"message": "No file"}})

    response = client.get("/v1/files/file-x/content", headers={"Authorization": f"Bearer {plain}"})

    assert error_of(response, 404)["type"] == "invalid_request_error"


# --- The OpenAPI document --------------------------------------------------------------------


def test_the_openapi_document_of_v1_is_served_to_anyone(client):
    response = client.get("/v1/openapi.yaml")

    assert response.status_code == 200 and response["Content-Type"] == "application/yaml"
    document = yaml.safe_load(b"".join(response.streaming_content))
    operations = {
        (path, method): op["operationId"]
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    }
    assert set(operations.values()) == {
        "createFile",
        "retrieveFile",
        "downloadFile",
        "createBatch",
        "listBatches",
        "retrieveBatch",
        "cancelBatch",
    }
    reference = spec()
    for (path, method), operation_id in operations.items():
        assert reference["paths"][path][method]["operationId"] == operation_id
    for name in ("Batch", "ListBatchesResponse", "OpenAIFile", "CreateBatchRequest"):
        assert document["components"]["schemas"][name] == reference["components"]["schemas"][name]
    assert document["servers"] == [{"url": "/v1"}]
    assert "X-Batchweb-Connection" in json.dumps(document["components"]["parameters"])
