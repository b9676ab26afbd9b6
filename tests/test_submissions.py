"""Submitting a batch from a JSONL file (issue 4): the check before anything is sent, the
summary and confirmation, the streamed upload, one batch per form, and failures after upload.

The check's own rules are unit-tested in test_jsonl_check.py; here every rule is seen through
the form, with nothing sent upstream while a problem stands (the `upstream` mock has no URL
registered in those tests, so any call would fail the request).
"""

from __future__ import annotations

import codecs
import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from requests_toolbelt import MultipartDecoder, MultipartEncoder
from responses import matchers

from batches import jsonl_check
from batches.jsonl_check import REQUIRED_BODY_FIELD, check_jsonl
from batches.models import Batch, Connection, Event, Submission, default_connection
from batches.services.submissions import submissions_cleanup
from batches.views import create as create_view
from tests.conftest import make_batch, make_list
from tests.openapi import validate_payload

API = settings.OPENAI_BASE_URL
CREATE = reverse("batch-create")
SAMPLE = Path(settings.BASE_DIR) / "static" / "samples" / "sample-chat.jsonl"
CHAT = "/v1/chat/completions"


# --- Helpers --------------------------------------------------------------------------------


def line(number: int | str = 1, **changes: Any) -> dict[str, Any]:
    """One valid chat-completions request; `changes` replace or (with None) drop keys, and
    `body` changes are merged into the body."""
    request: dict[str, Any] = {
        "custom_id": f"req-{number}",
        "method": "POST",
        "url": CHAT,
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Say {number}"}],
        },
    }
    body_changes = changes.pop("body_changes", {})
    for key, value in changes.items():
        if value is None:
            request.pop(key, None)
        else:
            request[key] = value
    for key, value in body_changes.items():
        if value is None:
            request["body"].pop(key, None)
        else:
            request["body"][key] = value
    return request


def jsonl(*lines: dict[str, Any] | str | bytes) -> bytes:
    """A JSONL file: dicts are dumped, strings encoded, bytes taken as they are."""
    encoded = []
    for item in lines:
        if isinstance(item, dict):
            item = json.dumps(item)
        encoded.append((item.encode() if isinstance(item, str) else item) + b"\n")
    return b"".join(encoded)


def valid_file(count: int = 3) -> bytes:
    return jsonl(*(line(i) for i in range(1, count + 1)))


def get_token(client) -> str:
    response = client.get(CREATE)
    match = re.search(r'name="submission_token" value="([^"]+)"', response.content.decode())
    assert match, "the form carries a hidden submission token"
    return match.group(1)


def post_file(
    client,
    token: str,
    content: bytes,
    *,
    name: str = "input.jsonl",
    follow: bool = False,
    **fields: str,
):
    data: dict[str, Any] = {
        "input_file": SimpleUploadedFile(name, content, content_type="application/jsonl"),
        "endpoint": "",
        "completion_window": "24h",
        "submission_token": token,
        **fields,
    }
    return client.post(CREATE, data, follow=follow)


def confirm_url(token: str) -> str:
    return reverse("submission-confirm", args=[token])


def text(response) -> str:
    return html.unescape(response.content.decode())


def plain(response) -> str:
    """The page's text without tags, spaces collapsed: what a person reads."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", response.content.decode())).split())


def problem_items(response) -> list[str]:
    """The numbered problem list of the form page, as shown."""
    listed = re.search(r'<ol class="problem-list">(.*?)</ol>', response.content.decode(), re.S)
    if not listed:
        return []
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", listed.group(1))]


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def uploaded(file_id: str = "file-up1", *, size: int = 0, filename: str = "input.jsonl"):
    payload = {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": 1764000000,
        "filename": filename,
        "purpose": "batch",
        "status": "processed",
    }
    validate_payload(payload, "OpenAIFile")
    return payload


def created(openai_id: str = "batch_up1", **metadata: str) -> dict[str, Any]:
    return make_batch(
        id=openai_id,
        status="validating",
        in_progress_at=None,
        input_file_id="file-up1",
        model="gpt-4o-mini",
        request_counts={"total": 0, "completed": 0, "failed": 0},
        usage=None,
        metadata=metadata or None,
    )


def calls(upstream) -> list[str]:
    """The upstream calls made, as "METHOD /path"."""
    return [
        f"{call.request.method} {call.request.path_url.split('?')[0].removeprefix('/v1')}"
        for call in upstream.calls
    ]


def create_bodies(upstream) -> list[dict[str, Any]]:
    return [
        json.loads(call.request.body)
        for call in upstream.calls
        if call.request.method == "POST" and call.request.url == f"{API}/batches"
    ]


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    """Stage files in a temporary directory, never in the repository's data/."""
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


@pytest.fixture
def staging(data_dir) -> Path:
    return data_dir / "staging"


def staged_files(staging: Path) -> list[Path]:
    return sorted(staging.glob("*")) if staging.exists() else []


def staged_of(token: str) -> Path:
    """Where the submission's checked file waits: a name of its own under data/staging, made
    by the server (nothing of the form's token in it)."""
    path = Path(Submission.objects.get(token=token).staged_path)
    assert path.parent.name == "staging" and path.suffix == ".jsonl", path
    assert token not in path.name, path
    return path


@pytest.fixture
def small_limits(monkeypatch, db) -> None:
    """Requests and bytes per file are the connection's limits; the embedding-input limit is a
    keyword default of check_jsonl (bound when it was defined), so it is lowered there."""
    default_connection()
    Connection.objects.filter(slug="default").update(max_requests_per_file=3, max_file_bytes=2_000)
    defaults = jsonl_check.check_jsonl.__kwdefaults__
    monkeypatch.setitem(defaults, "max_embedding_inputs", 5)


@pytest.fixture
def encoders(monkeypatch) -> list[MultipartEncoder]:
    """Every multipart encoder the client builds, to see what it was handed."""
    made: list[MultipartEncoder] = []

    class Recording(MultipartEncoder):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("batches.openai_client.MultipartEncoder", Recording)
    return made


def assert_nothing_happened(upstream, staging: Path) -> None:
    assert calls(upstream) == []
    assert not Submission.objects.exists()
    assert not Batch.objects.exists()
    assert not Event.objects.exists()
    assert staged_files(staging) == []


# --- Every rule of the check, through the form -----------------------------------------------

RULES = [
    pytest.param(
        [line(1), '{"custom_id": "req-2", "method": "POST"', line(3)],
        {},
        ["line 2: not valid JSON"],
        id="not-json",
    ),
    pytest.param(
        [line(1), "[1, 2, 3]"],
        {},
        ["line 2: each line must be a JSON object, this one is a list"],
        id="not-an-object",
    ),
    pytest.param(
        [line(1), line(2, custom_id=None)], {}, ["line 2: custom_id is missing"], id="no-custom-id"
    ),
    pytest.param(
        [line(1), line(2, custom_id="")], {}, ["line 2: custom_id is empty"], id="empty-custom-id"
    ),
    pytest.param(
        [line(1), line(2, custom_id=7)],
        {},
        ["line 2: custom_id must be a string, not a number"],
        id="custom-id-not-a-string",
    ),
    pytest.param(
        [line(i, custom_id=f"a-{i - 1}") for i in range(1, 17)] + [line(17, custom_id="a-3")],
        {},
        ["line 17: custom_id 'a-3' already used on line 4"],
        id="duplicate-custom-id",
    ),
    pytest.param(
        [line(1), line(2, method="GET")],
        {},
        ["line 2: method must be 'POST', not 'GET'"],
        id="method-not-post",
    ),
    pytest.param(
        [line(1), line(2, method=None)],
        {},
        ["line 2: method is missing; it must be 'POST'"],
        id="method-missing",
    ),
    pytest.param(
        [line(1), line(2)],
        {"endpoint": "/v1/embeddings"},
        [
            "line 1: url '/v1/chat/completions' differs from the batch endpoint '/v1/embeddings'",
            "line 2: url '/v1/chat/completions' differs from the batch endpoint '/v1/embeddings'",
        ],
        id="url-not-the-chosen-endpoint",
    ),
    pytest.param(
        [
            line(1),
            line(2),
            line(3, url="/v1/embeddings", body={"model": "gpt-4o-mini", "input": "x"}),
        ],
        {},
        [
            "line 3: url '/v1/embeddings' differs from the batch endpoint"
            " '/v1/chat/completions' (from line 1)"
        ],
        id="url-not-the-inferred-endpoint",
    ),
    pytest.param(
        [line(1, url="/v1/chat")],
        {},
        ["line 1: url '/v1/chat' is not a Batch API endpoint"],
        id="url-unknown",
    ),
    pytest.param(
        [line(1), line(2, body_changes={"model": None})],
        {},
        ["line 2: body.model is missing"],
        id="model-missing",
    ),
    pytest.param(
        [line(1), line(2), line(3, body_changes={"model": "gpt-4o"})],
        {},
        [
            "line 3: model 'gpt-4o' differs from 'gpt-4o-mini' used on line 1;"
            " a batch takes one model",
            "the file mixes 2 models ('gpt-4o-mini' on 2 lines, 'gpt-4o' on 1 line)",
        ],
        id="different-models",
    ),
    pytest.param([line(1), line(2, body=None)], {}, ["line 2: body is missing"], id="body-missing"),
    pytest.param(
        [line(1), line(2, body="hello")],
        {},
        ["line 2: body must be a JSON object, not a string"],
        id="body-not-an-object",
    ),
    pytest.param(
        [line(1), b'{"custom_id": "req-\xff", "method": "POST"}'],
        {},
        ["line 2: not valid UTF-8 text"],
        id="not-utf8",
    ),
]


@pytest.mark.parametrize(("lines", "fields", "expected"), RULES)
def test_each_rule_is_reported_by_the_form_and_nothing_is_sent(
    submitter_client, upstream, staging, lines, fields, expected
):
    token = get_token(submitter_client)

    response = post_file(submitter_client, token, jsonl(*lines), **fields)

    assert response.status_code == 400
    page = text(response)
    assert "The file was not sent:" in page
    assert "Nothing was uploaded." in page
    listed = problem_items(response)
    for message in expected:
        if message.startswith("line "):  # a line problem, in the numbered list
            assert any(item.startswith(message) for item in listed), (message, listed)
        else:  # a problem with the whole file
            assert f"<li>{message}" in page, message
    assert_nothing_happened(upstream, staging)


@pytest.mark.parametrize(("endpoint", "field"), sorted(REQUIRED_BODY_FIELD.items()))
def test_the_field_each_endpoint_requires_is_checked(
    submitter_client, upstream, staging, endpoint, field
):
    token = get_token(submitter_client)
    good = {
        "model": "m-1",
        field: [{"role": "user", "content": "x"}] if field == "messages" else "x",
    }
    content = jsonl(
        {"custom_id": "a", "method": "POST", "url": endpoint, "body": good},
        {"custom_id": "b", "method": "POST", "url": endpoint, "body": {"model": "m-1"}},
    )

    response = post_file(submitter_client, token, content)

    assert response.status_code == 400
    assert problem_items(response) == [f"line 2: body.{field} is missing (required for {endpoint})"]
    assert_nothing_happened(upstream, staging)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            valid_file(4),
            "the file has 4 requests; a batch takes at most 3, so lines after the limit"
            " were not checked",
            id="too-many-lines",
        ),
        pytest.param(
            jsonl(*(line(i, body_changes={"pad": "x" * 500}) for i in range(1, 4))) + b"\n",
            "a batch input file may be at most 2,000 bytes",
            id="too-many-bytes",
        ),
        pytest.param(
            jsonl(
                *(
                    {
                        "custom_id": f"e-{i}",
                        "method": "POST",
                        "url": "/v1/embeddings",
                        "body": {"model": "text-embedding-3-small", "input": ["a", "b"]},
                    }
                    for i in range(1, 4)
                )
            ),
            "the file has 6 embedding inputs; a batch takes at most 5 (passed on line 3)",
            id="too-many-embedding-inputs",
        ),
    ],
)
def test_file_limits_are_reported_by_the_form(
    submitter_client, upstream, staging, small_limits, content, expected
):
    token = get_token(submitter_client)

    response = post_file(submitter_client, token, content)

    assert response.status_code == 400
    assert expected in text(response)
    assert_nothing_happened(upstream, staging)


def test_all_problems_are_listed_at_once_with_line_numbers_and_totals(
    submitter_client, upstream, staging
):
    token = get_token(submitter_client)
    content = jsonl(
        line(1),
        line(2, method="GET"),
        line(3),
        line(4, custom_id="req-1"),
        "not json at all",
        "",
        line(7, body_changes={"messages": None}),
    )

    response = post_file(submitter_client, token, content, label="keep me")

    assert response.status_code == 400
    assert problem_items(response) == [
        "line 2: method must be 'POST', not 'GET'",
        "line 4: custom_id 'req-1' already used on line 1",
        "line 5: not valid JSON (Expecting value at column 1)",
        "line 7: body.messages is missing (required for /v1/chat/completions)",
    ]
    page = text(response)
    # The totals: what the file holds and how many problems.
    assert "The file was not sent: 6 requests for /v1/chat/completions with gpt-4o-mini" in page
    assert "4 problems (4 on lines)." in page
    # What was typed is kept; the file has to be chosen again.
    assert 'value="keep me"' in response.content.decode()
    assert f'value="{token}"' in response.content.decode()
    assert_nothing_happened(upstream, staging)


def test_a_file_broken_on_every_line_lists_the_first_fifty_and_counts_all(
    submitter_client, upstream, staging
):
    token = get_token(submitter_client)
    content = jsonl(*(line(i, method="GET") for i in range(1, 71)))

    response = post_file(submitter_client, token, content)

    items = problem_items(response)
    assert len(items) == create_view.SHOWN_PROBLEMS == 50
    assert items[0] == "line 1: method must be 'POST', not 'GET'"
    assert items[-1] == "line 50: method must be 'POST', not 'GET'"
    assert "…and 70 problems in all; the first 50 are listed." in text(response)
    assert_nothing_happened(upstream, staging)


def test_utf16_and_empty_files_are_refused(submitter_client, upstream, staging):
    token = get_token(submitter_client)

    utf16 = post_file(
        submitter_client, token, codecs.BOM_UTF16_LE + valid_file(1).decode().encode("utf-16-le")
    )
    empty = post_file(submitter_client, token, b"")
    blank = post_file(submitter_client, token, b"\n\r\n  \n")

    assert utf16.status_code == empty.status_code == blank.status_code == 400
    assert "the file is UTF-16 text; save it as UTF-8" in text(utf16)
    assert "The submitted file is empty." in text(empty)  # Django's own check, before ours
    assert "the file has no requests" in text(blank)
    assert_nothing_happened(upstream, staging)


def test_a_bom_crlf_line_ends_and_blank_lines_are_accepted(submitter_client, upstream, staging):
    token = get_token(submitter_client)
    lines = [json.dumps(line(i)) for i in range(1, 4)]
    content = codecs.BOM_UTF8 + f"{lines[0]}\r\n\r\n{lines[1]}\r\n   \r\n{lines[2]}\r\n\n".encode()

    response = post_file(submitter_client, token, content)

    assert response.status_code == 302
    assert response["Location"] == confirm_url(token)
    submission = Submission.objects.get(token=token)
    assert submission.facts["lines"] == 3
    assert submission.facts["bytes"] == len(content)
    # The staged file is the uploaded one, byte for byte: OpenAI takes these too.
    assert Path(submission.staged_path).read_bytes() == content
    assert calls(upstream) == []


# --- A valid file: summary, confirmation, streamed upload, create ---------------------------


def test_a_valid_file_is_summarised_and_staged_until_confirmed(submitter_client, upstream, staging):
    token = get_token(submitter_client)
    content = SAMPLE.read_bytes()
    report = check_jsonl(SAMPLE.open("rb"))

    response = post_file(
        submitter_client,
        token,
        content,
        name="sample-chat.jsonl",
        label="nightly",
        **{
            "meta_key_0": "team",
            "meta_value_0": "search",
            "output_expires_after_hours": "48",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == confirm_url(token)
    submission = Submission.objects.get(token=token)
    assert submission.state == Submission.State.CHECKED
    staged = staged_of(token)
    assert staged.parent == staging
    assert staged_files(staging) == [staged]
    assert Path(submission.staged_path) == staged
    assert staged.read_bytes() == content
    assert submission.request == {
        "endpoint": CHAT,  # inferred from the file
        "completion_window": "24h",
        "metadata": {"team": "search", "job": "nightly"},
        "output_expires_after_seconds": 48 * 3600,
    }

    page = submitter_client.get(confirm_url(token))

    assert page.status_code == 200
    shown = text(page)
    assert "The file passed every check" in shown
    facts = dict(
        (html.unescape(dt_), html.unescape(re.sub(r"<[^>]+>", "", dd)).strip())
        for dt_, dd in re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", page.content.decode())
    )
    assert facts["File"] == "sample-chat.jsonl"
    assert facts["Requests"] == "20"
    assert facts["Model"] == "gpt-4o-mini"
    assert facts["Endpoint"] == CHAT
    assert facts["Size"] == html.unescape(filesizeformat(len(content)))
    assert facts["Input tokens"].startswith(f"about {report.estimated_input_tokens:,}")
    assert report.estimated_input_tokens > 0
    assert facts["Output deleted after"] == "48 hours"
    assert "team=search" in facts["Metadata"]
    assert "Upload and create the batch" in shown
    assert calls(upstream) == []  # nothing is sent until the person confirms


def test_a_large_upload_spooled_to_disk_is_moved_into_staging(
    submitter_client, upstream, staging, settings, tmp_path
):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every upload goes to a temporary file
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    token = get_token(submitter_client)
    content = valid_file(50)

    response = post_file(submitter_client, token, content)

    assert response.status_code == 302
    assert staged_of(token).read_bytes() == content
    assert list((tmp_path / "uploads").iterdir()) == []  # moved, not copied and left behind


def test_confirming_uploads_the_file_streamed_then_creates_the_batch(
    submitter_client, upstream, staging, submitter, encoders
):
    token = get_token(submitter_client)
    content = SAMPLE.read_bytes()
    post_file(submitter_client, token, content, name="sample-chat.jsonl", label="nightly")
    staged = staged_of(token)
    upstream.post(
        f"{API}/files",
        json=uploaded(size=len(content), filename="sample-chat.jsonl"),
        headers={"x-request-id": "req_up1"},
        match=[matchers.header_matcher({"Content-Type": re.compile(r"^multipart/form-data")})],
    )
    upstream.post(
        f"{API}/batches",
        json=created(batchweb_token=token, batchweb_user="sam", job="nightly"),
        match=[
            matchers.json_params_matcher(
                {
                    "input_file_id": "file-up1",
                    "endpoint": CHAT,
                    "completion_window": "24h",
                    "metadata": {"job": "nightly", "batchweb_token": token, "batchweb_user": "sam"},
                }
            )
        ],
    )

    response = submitter_client.post(confirm_url(token))

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-detail", args=["default", "batch_up1"])
    assert messages_of(response) == ["Batch batch_up1 created."]
    assert calls(upstream) == ["POST /files", "POST /batches"]

    # The client was handed a streaming encoder reading the staged file from disk.
    (encoder,) = encoders
    filename, fileobj, content_type = encoder.fields["file"]
    assert (filename, content_type) == ("sample-chat.jsonl", "application/jsonl")
    assert not isinstance(fileobj, bytes | str)
    assert Path(fileobj.name) == staged
    assert encoder.fields["purpose"] == "batch"
    # What went over the wire (responses drains the stream into the recorded request).
    wire = upstream.calls[0].request
    assert int(wire.headers["Content-Length"]) == len(wire.body)
    parts = MultipartDecoder(wire.body, wire.headers["Content-Type"]).parts
    by_name = {
        re.search(rb'name="([^"]+)"', part.headers[b"Content-Disposition"]).group(1): part
        for part in parts
    }
    assert set(by_name) == {b"purpose", b"file"}
    assert by_name[b"purpose"].content == b"batch"
    assert b'filename="sample-chat.jsonl"' in by_name[b"file"].headers[b"Content-Disposition"]
    assert by_name[b"file"].content == content

    batch = Batch.objects.get()
    assert batch.openai_id == "batch_up1"
    assert batch.input_file_id == "file-up1"
    assert (batch.input_filename, batch.input_bytes, batch.input_lines) == (
        "sample-chat.jsonl",
        len(content),
        20,
    )
    assert batch.model == "gpt-4o-mini"
    assert batch.created_by == submitter
    assert batch.submission_token == token
    submission = Submission.objects.get(token=token)
    assert submission.state == Submission.State.DONE
    assert submission.batch == batch
    assert submission.uploaded_file_id == "file-up1"
    assert submission.staged_path == ""
    assert staged_files(staging) == []
    events = list(Event.objects.order_by("id").values_list("action", "user__username", "batch"))
    assert events == [(Event.Action.UPLOAD, "sam", None), (Event.Action.CREATE, "sam", batch.pk)]
    assert "sample-chat.jsonl as file-up1" in Event.objects.get(action=Event.Action.UPLOAD).detail


def test_the_batch_page_shows_the_input_files_facts(submitter_client, upstream, staging):
    token = get_token(submitter_client)
    content = SAMPLE.read_bytes()
    post_file(submitter_client, token, content, name="sample-chat.jsonl")
    upstream.post(f"{API}/files", json=uploaded(size=len(content)))
    upstream.post(f"{API}/batches", json=created(batchweb_token=token))
    upstream.get(f"{API}/batches/batch_up1", json=created(batchweb_token=token))

    response = submitter_client.post(confirm_url(token), follow=True)

    assert response.status_code == 200
    page = text(response)
    assert "Batch batch_up1 created." in page
    assert "file-up1" in page
    size = html.unescape(filesizeformat(len(content)))
    assert f"sample-chat.jsonl</bdi>, {size}, 20 lines" in page  # the name isolated (bidi)
    assert "by <bdi>sam</bdi>" in page


def test_an_embeddings_file_shows_its_input_count(submitter_client, upstream, staging):
    token = get_token(submitter_client)
    content = jsonl(
        *(
            {
                "custom_id": f"e-{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": ["one", "two", "three"]},
            }
            for i in range(1, 5)
        )
    )

    post_file(submitter_client, token, content, endpoint="/v1/embeddings")
    page = text(submitter_client.get(confirm_url(token)))

    assert "Embedding inputs</dt><dd>12</dd>" in page
    assert "text-embedding-3-small" in page


# --- One batch per form -----------------------------------------------------------------------


def stage_sample(client, upstream, token: str) -> bytes:
    content = SAMPLE.read_bytes()
    assert post_file(client, token, content, name="sample-chat.jsonl").status_code == 302
    return content


def test_confirming_twice_uploads_once_and_creates_once(submitter_client, upstream, staging):
    token = get_token(submitter_client)
    stage_sample(submitter_client, upstream, token)
    upstream.post(f"{API}/files", json=uploaded())
    upstream.post(f"{API}/batches", json=created(batchweb_token=token))

    first = submitter_client.post(confirm_url(token))
    second = submitter_client.post(confirm_url(token))

    assert first.status_code == second.status_code == 302
    assert (
        first["Location"]
        == second["Location"]
        == reverse("batch-detail", args=["default", "batch_up1"])
    )
    assert calls(upstream) == ["POST /files", "POST /batches"]
    assert Batch.objects.count() == 1
    assert Event.objects.filter(action=Event.Action.CREATE).count() == 1
    # The confirmation page of a done submission goes to its batch too.
    assert submitter_client.get(confirm_url(token))["Location"] == first["Location"]


def test_a_confirmation_still_running_is_not_sent_again(
    submitter_client, upstream, staging, submitter
):
    token = get_token(submitter_client)
    stage_sample(submitter_client, upstream, token)
    Submission.objects.filter(token=token).update(state=Submission.State.PENDING)

    response = submitter_client.post(confirm_url(token))

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-list")
    assert "already being submitted" in messages_of(response)[0]
    assert calls(upstream) == []


def test_the_upload_form_sent_again_after_success_goes_to_the_batch(
    submitter_client, upstream, staging
):
    token = get_token(submitter_client)
    content = stage_sample(submitter_client, upstream, token)
    upstream.post(f"{API}/files", json=uploaded())
    upstream.post(f"{API}/batches", json=created(batchweb_token=token))
    submitter_client.post(confirm_url(token))

    again = post_file(submitter_client, token, content, name="sample-chat.jsonl")

    assert again.status_code == 302
    assert again["Location"] == reverse("batch-detail", args=["default", "batch_up1"])
    assert "already submitted" in messages_of(again)[-1]
    assert calls(upstream) == ["POST /files", "POST /batches"]
    assert staged_files(staging) == []  # the second copy was not kept
    assert Submission.objects.get().state == Submission.State.DONE


def test_the_form_sent_again_before_confirming_replaces_the_checked_file(
    submitter_client, upstream, staging
):
    token = get_token(submitter_client)
    stage_sample(submitter_client, upstream, token)

    response = post_file(submitter_client, token, valid_file(3), name="three.jsonl")

    assert response["Location"] == confirm_url(token)
    submission = Submission.objects.get()
    assert (submission.filename, submission.facts["lines"]) == ("three.jsonl", 3)
    assert staged_files(staging) == [staged_of(token)]  # the first one is removed
    assert staged_of(token).read_bytes() == valid_file(3)


# --- Failures after the upload ---------------------------------------------------------------


def test_a_timeout_after_the_upload_is_reconciled_and_never_uploads_twice(
    submitter_client, upstream, staging, submitter
):
    token = get_token(submitter_client)
    stage_sample(submitter_client, upstream, token)
    upstream.post(f"{API}/files", json=uploaded())
    upstream.post(f"{API}/batches", body=requests.exceptions.ReadTimeout("read timed out"))
    upstream.post(f"{API}/batches", json=created("batch_second", batchweb_token=token))
    upstream.get(f"{API}/batches", json=make_list([make_batch(id="batch_other")]))

    failed = submitter_client.post(confirm_url(token))

    assert failed.status_code == 502
    page = text(failed)
    assert "The batch was not created." in page
    assert "is not available right now" in page
    assert "within the time limit" in page
    assert (
        "The file is already uploaded as file-up1; trying again will not upload it again."
        in plain(failed)
    )
    assert "Try again" in page
    assert "Traceback" not in page and "ReadTimeout" not in page
    # The failed create was looked for by its token before being reported.
    assert calls(upstream) == ["POST /files", "POST /batches", "GET /batches"]
    submission = Submission.objects.get(token=token)
    assert (submission.state, submission.uploaded_file_id) == (Submission.State.FAILED, "file-up1")
    assert not Batch.objects.exists()

    again = submitter_client.post(confirm_url(token))

    assert again.status_code == 302
    assert again["Location"] == reverse("batch-detail", args=["default", "batch_second"])
    # Try again: no second upload; the list is searched for the token first, then created.
    assert calls(upstream)[3:] == ["GET /batches", "POST /batches"]
    assert [body["input_file_id"] for body in create_bodies(upstream)] == ["file-up1", "file-up1"]
    batch = Batch.objects.get()
    assert (batch.created_by, batch.input_lines, batch.input_filename) == (
        submitter,
        20,
        "sample-chat.jsonl",
    )
    assert Event.objects.filter(action=Event.Action.UPLOAD).count() == 1
    assert staged_files(staging) == []


def test_try_again_finds_a_batch_the_timed_out_create_made_after_all(
    submitter_client, upstream, staging, submitter
):
    token = get_token(submitter_client)
    stage_sample(submitter_client, upstream, token)
    upstream.post(f"{API}/files", json=uploaded())
    upstream.post(f"{API}/batches", body=requests.exceptions.ReadTimeout("read timed out"))
    # Not there when the timeout happened; there by the time the person tries again.
    upstream.get(f"{API}/batches", json=make_list([make_batch(id="batch_other")]))
    upstream.get(
        f"{API}/batches",
        json=make_list([make_batch(id="batch_other"), created("batch_late", batchweb_token=token)]),
    )

    assert submitter_client.post(confirm_url(token)).status_code == 502
    again = submitter_client.post(confirm_url(token))

    assert again.status_code == 302
    assert again["Location"] == reverse("batch-detail", args=["default", "batch_late"])
    assert calls(upstream) == ["POST /files", "POST /batches", "GET /batches", "GET /batches"]
    batch = Batch.objects.get()
    assert (batch.openai_id, batch.created_by, batch.input_lines) == ("batch_late", submitter, 20)
    assert Submission.objects.get(token=token).batch == batch


def test_a_failed_upload_keeps_the_staged_file_and_can_be_tried_again(
    submitter_client, upstream, staging, no_sleep
):
    token = get_token(submitter_client)
    stage_sample(submitter_client, upstream, token)
    upstream.post(f"{API}/files", status=503, json={"error": {"message": "overloaded"}})
    upstream.post(f"{API}/files", json=uploaded())
    upstream.get(f"{API}/batches", json=make_list([]))
    upstream.post(f"{API}/batches", json=created(batchweb_token=token))

    failed = submitter_client.post(confirm_url(token))

    assert failed.status_code == 502
    assert "overloaded" in text(failed)
    assert "already uploaded" not in text(failed)
    assert staged_files(staging) == [staged_of(token)]
    assert calls(upstream) == ["POST /files"]  # an upload is never retried on its own

    again = submitter_client.post(confirm_url(token))

    assert again["Location"] == reverse("batch-detail", args=["default", "batch_up1"])
    assert calls(upstream)[1:] == ["POST /files", "GET /batches", "POST /batches"]


def test_an_upstream_400_on_create_is_shown_on_the_confirmation_page(
    submitter_client, upstream, staging
):
    token = get_token(submitter_client)
    content = SAMPLE.read_bytes()
    post_file(submitter_client, token, content, name="sample-chat.jsonl", label="nightly")
    upstream.post(f"{API}/files", json=uploaded())
    upstream.post(
        f"{API}/batches",
        status=400,
        json={
            "error": {
                "message": "Model gpt-4o-mini is not available for batch in this project.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        },
        headers={"x-request-id": "req_bad1"},
    )

    response = submitter_client.post(confirm_url(token))

    assert response.status_code == 400
    page = text(response)
    assert "The batch was not created." in page
    assert "Model gpt-4o-mini is not available for batch in this project." in page
    assert "req_bad1" in page
    # Everything asked for is still there, and the uploaded file is kept.
    assert "sample-chat.jsonl" in page
    assert "job=nightly" in plain(response)
    assert "already uploaded as file-up1" in plain(response)
    assert calls(upstream) == ["POST /files", "POST /batches"]  # a 400 is not ambiguous
    submission = Submission.objects.get(token=token)
    assert submission.state == Submission.State.FAILED
    assert submission.request["metadata"] == {"job": "nightly"}
    assert not Batch.objects.exists()
    assert Event.objects.filter(action=Event.Action.CREATE_FAILED).count() == 1


def test_a_staged_file_removed_meanwhile_asks_for_the_file_again(
    submitter_client, upstream, staging
):
    token = get_token(submitter_client)
    stage_sample(submitter_client, upstream, token)
    staged_of(token).unlink()

    response = submitter_client.post(confirm_url(token))

    assert response.status_code == 400
    assert "The checked file is no longer on the server" in text(response)
    assert calls(upstream) == []


# --- A file or a file id ------------------------------------------------------------------------


def test_a_file_and_a_file_id_together_are_refused(submitter_client, upstream, staging):
    token = get_token(submitter_client)

    response = post_file(
        submitter_client, token, valid_file(), input_file_id="file-x", endpoint=CHAT
    )

    assert response.status_code == 400
    assert "Choose a file or give a file id, not both." in text(response)
    assert_nothing_happened(upstream, staging)


def test_neither_a_file_nor_a_file_id_is_refused(submitter_client, upstream, staging):
    token = get_token(submitter_client)

    response = submitter_client.post(
        CREATE, {"completion_window": "24h", "submission_token": token, "endpoint": CHAT}
    )

    assert response.status_code == 400
    assert "Choose a JSONL file, or give the id of one." in text(response)
    assert_nothing_happened(upstream, staging)


def test_a_file_id_needs_an_endpoint(submitter_client, upstream, staging):
    token = get_token(submitter_client)

    response = submitter_client.post(
        CREATE, {"input_file_id": "file-x", "completion_window": "24h", "submission_token": token}
    )

    assert response.status_code == 400
    assert "Choose the endpoint: it cannot be read from a file id." in text(response)
    assert 'value="file-x"' in response.content.decode()
    assert_nothing_happened(upstream, staging)


def test_a_file_id_is_created_at_once_without_upload(submitter_client, upstream, staging):
    token = get_token(submitter_client)
    upstream.post(f"{API}/batches", json=created(batchweb_token=token))

    response = submitter_client.post(
        CREATE,
        {
            "input_file_id": "file-up1",
            "endpoint": CHAT,
            "completion_window": "24h",
            "submission_token": token,
        },
    )

    assert response["Location"] == reverse("batch-detail", args=["default", "batch_up1"])
    assert calls(upstream) == ["POST /batches"]
    assert staged_files(staging) == []


# --- Who may -------------------------------------------------------------------------------------


def test_a_viewer_can_neither_open_the_form_nor_confirm(
    viewer_client, submitter, upstream, staging
):
    Submission.objects.create(
        token="tok-sam", user=submitter, state=Submission.State.CHECKED, facts={}, request={}
    )

    assert viewer_client.get(CREATE).status_code == 403
    upload = {"input_file": SimpleUploadedFile("a.jsonl", valid_file()), "submission_token": "t"}
    assert viewer_client.post(CREATE, upload).status_code == 403
    assert viewer_client.get(confirm_url("tok-sam")).status_code == 403
    assert viewer_client.post(confirm_url("tok-sam")).status_code == 403
    assert calls(upstream) == []
    assert staged_files(staging) == []


def test_another_submitter_cannot_see_or_confirm_someone_elses_submission(
    client, submitter_client, upstream, staging
):
    token = get_token(submitter_client)
    stage_sample(submitter_client, upstream, token)
    other = User.objects.create_user("sue", "sue@example.com", "pw-sue-123")
    other.groups.add(Group.objects.get(name="Submitters"))
    client.force_login(other)

    # Found by token and owner: another person's submission is not found (a token reveals
    # nothing).
    assert client.get(confirm_url(token)).status_code == 404
    assert client.post(confirm_url(token)).status_code == 404
    assert calls(upstream) == []
    assert Submission.objects.get(token=token).state == Submission.State.CHECKED


def test_signed_out_people_are_sent_to_sign_in(client, upstream):
    for response in (client.get(CREATE), client.get(confirm_url("any")), client.post(CREATE)):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_an_unknown_submission_is_not_found(submitter_client):
    assert submitter_client.get(confirm_url("no-such-token")).status_code == 404


# --- Clean-up ----------------------------------------------------------------------------------


def test_staged_files_nobody_confirmed_are_removed_after_24_hours(
    submitter_client, upstream, staging
):
    old, fresh = get_token(submitter_client), get_token(submitter_client)
    stage_sample(submitter_client, upstream, old)
    stage_sample(submitter_client, upstream, fresh)
    now = timezone.now()
    Submission.objects.filter(token=old).update(updated_at=now - dt.timedelta(hours=24, minutes=1))
    Submission.objects.filter(token=fresh).update(updated_at=now - dt.timedelta(hours=23))

    assert submissions_cleanup(now=now) == 1

    assert staged_files(staging) == [staged_of(fresh)]
    assert Submission.objects.get(token=old).staged_path == ""
    assert submissions_cleanup(now=now) == 0
    # Confirming the cleaned one now asks for the file again, sending nothing.
    response = submitter_client.post(confirm_url(old))
    assert response.status_code == 400
    assert "no longer on the server" in text(response)
    assert calls(upstream) == []


# --- The guide ---------------------------------------------------------------------------------


def test_the_create_page_has_a_guide_and_the_samples_pass_the_check(submitter_client):
    page = text(submitter_client.get(CREATE))

    assert "At most 50,000 requests (100,000 on Azure) and 200 MB per file" in page
    assert 'href="/static/samples/sample-chat.jsonl" download' in page
    for sample in SAMPLE.parent.glob("*.jsonl"):
        with sample.open("rb") as stream:
            assert check_jsonl(stream).ok, sample


def test_the_check_form_sent_again_while_confirming_leaves_the_staged_file_alone(
    submitter_client, upstream, staging
):
    """Back to the form and "Check the file" again while the upload of the first runs: the
    second is refused, and the file being uploaded (or to be tried again) is not touched."""
    token = get_token(submitter_client)
    content = stage_sample(submitter_client, upstream, token)
    staged = Path(Submission.objects.get(token=token).staged_path)
    Submission.objects.filter(token=token).update(state=Submission.State.PENDING)

    again = post_file(submitter_client, token, valid_file(3), name="three.jsonl")

    assert again["Location"] == reverse("batch-list")
    assert "already being submitted" in messages_of(again)[0]
    assert staged_files(staging) == [staged]
    assert staged.read_bytes() == content
    assert calls(upstream) == []
