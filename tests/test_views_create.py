"""Creating a batch: validation before anything is sent, one batch per form, dedup on timeout."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.messages import get_messages
from django.urls import reverse
from responses import matchers

from batches import forms as batch_forms
from batches.forms import BatchCreateForm
from batches.models import Batch, Connection, Event, Submission
from tests.conftest import make_batch, make_list

API = settings.OPENAI_BASE_URL
CREATE = reverse("batch-create")


def get_token(client) -> str:
    response = client.get(CREATE)
    match = re.search(
        r'<input type="hidden" name="submission_token" value="([^"]+)"', response.content.decode()
    )
    assert match, "the form carries a hidden submission token"
    return match.group(1)


def form_data(token: str, **changes: str) -> dict[str, str]:
    data = {
        "input_file_id": "file-in1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "label": "nightly-eval",
        "output_expires_after_hours": "48",
        "submission_token": token,
        "meta_key_0": "team",
        "meta_value_0": "search",
        "meta_key_1": "owner",
        "meta_value_1": "ada",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def created(openai_id: str = "batch_new1", **metadata: str) -> dict[str, Any]:
    """What upstream answers to a create: a fresh batch, still validating."""
    return make_batch(
        id=openai_id,
        status="validating",
        in_progress_at=None,
        request_counts={"total": 0, "completed": 0, "failed": 0},
        usage=None,
        metadata=metadata or None,
    )


def sent_bodies(upstream) -> list[dict[str, Any]]:
    return [
        json.loads(call.request.body)
        for call in upstream.calls
        if call.request.method == "POST" and call.request.url == f"{API}/batches"
    ]


def text(response) -> str:
    return html.unescape(response.content.decode())


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- The form -----------------------------------------------------------------------------------


def test_the_form_carries_a_fresh_hidden_submission_token(submitter_client, upstream):
    first, second = get_token(submitter_client), get_token(submitter_client)

    assert len(first) >= 20
    assert first != second
    assert not Submission.objects.exists()
    assert len(upstream.calls) == 0


def test_the_form_shows_every_field_with_a_label(submitter_client):
    rows = batch_forms.METADATA_ROWS
    response = submitter_client.get(CREATE)

    assert response.status_code == 200
    content = text(response)
    for label in [
        "Input file (JSONL)",
        "…or the id of a file already uploaded",
        "Endpoint",
        "Completion window",
        "Label",
    ]:
        assert f">{label}" in content
    assert 'name="input_file" accept=".jsonl' in content
    assert 'enctype="multipart/form-data"' in content
    assert f"Metadata key {rows}" in content
    assert f'name="meta_key_{rows - 1}"' in content
    assert f'name="meta_key_{rows}"' not in content


def test_the_endpoint_can_be_preselected_by_the_query_string(submitter_client):
    response = submitter_client.get(CREATE, {"endpoint": "/v1/embeddings"})

    assert '<option value="/v1/embeddings" selected>' in response.content.decode()


def test_an_unknown_preselected_endpoint_is_ignored(submitter_client):
    response = submitter_client.get(CREATE, {"endpoint": "/v1/evil"})

    assert response.status_code == 200
    assert "/v1/evil" not in response.content.decode()


# --- Creating -----------------------------------------------------------------------------------


def test_a_valid_form_creates_the_batch_upstream_with_the_stamped_metadata(
    submitter_client, upstream, submitter
):
    token = get_token(submitter_client)
    upstream.post(
        f"{API}/batches",
        json=created(batchweb_token=token, batchweb_user="sam", job="nightly-eval"),
        match=[
            matchers.json_params_matcher(
                {"metadata": {"batchweb_token": token, "batchweb_user": "sam"}},
                strict_match=False,
            )
        ],
    )

    response = submitter_client.post(CREATE, form_data(token))

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-detail", args=["default", "batch_new1"])
    assert sent_bodies(upstream) == [
        {
            "input_file_id": "file-in1",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {
                "team": "search",
                "owner": "ada",
                "job": "nightly-eval",
                "batchweb_token": token,
                "batchweb_user": "sam",
            },
            "output_expires_after": {"anchor": "created_at", "seconds": 48 * 3600},
        }
    ]
    batch = Batch.objects.get()
    assert batch.openai_id == "batch_new1"
    assert batch.created_by == submitter
    assert batch.submission_token == token
    assert batch.status == "validating"
    event = Event.objects.get()
    assert (event.action, event.user, event.batch) == (Event.Action.CREATE, submitter, batch)
    submission = Submission.objects.get(token=token)
    assert (submission.state, submission.batch) == (Submission.State.DONE, batch)
    assert messages_of(response) == ["Batch batch_new1 created."]


def test_a_form_without_label_metadata_or_expiry_sends_only_the_stamps(submitter_client, upstream):
    token = get_token(submitter_client)
    upstream.post(f"{API}/batches", json=created())

    response = submitter_client.post(
        CREATE,
        form_data(
            token,
            label="",
            output_expires_after_hours="",
            meta_key_0="",
            meta_value_0="",
            meta_key_1="",
            meta_value_1="",
        ),
    )

    assert response.status_code == 302
    assert sent_bodies(upstream) == [
        {
            "input_file_id": "file-in1",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"batchweb_token": token, "batchweb_user": "sam"},
        }
    ]


def test_after_creating_the_detail_page_shows_the_new_batch_and_a_message(
    submitter_client, upstream
):
    token = get_token(submitter_client)
    upstream.post(f"{API}/batches", json=created(job="nightly-eval"))
    upstream.get(f"{API}/batches/batch_new1", json=created(job="nightly-eval"))

    response = submitter_client.post(CREATE, form_data(token), follow=True)

    assert response.status_code == 200
    content = text(response)
    assert "Batch batch_new1 created." in content
    assert "nightly-eval" in content
    assert "by <bdi>sam</bdi>" in content  # a name is isolated from the text around it
    assert "validating" in content


def test_metadata_posted_beyond_the_forms_rows_is_ignored(submitter_client, upstream):
    token = get_token(submitter_client)
    upstream.post(f"{API}/batches", json=created())

    rows = batch_forms.METADATA_ROWS
    extra = {f"meta_key_{rows}": "smuggled", f"meta_value_{rows}": "x", "meta_key_99": "y"}
    response = submitter_client.post(CREATE, form_data(token, **extra))

    assert response.status_code == 302
    (body,) = sent_bodies(upstream)
    assert "smuggled" not in body["metadata"]
    assert "meta_key_99" not in body["metadata"]
    assert set(body["metadata"]) == {"team", "owner", "job", "batchweb_token", "batchweb_user"}


# --- Validation before anything is sent ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"input_file_id": ""}, "Choose a JSONL file, or give the id of one."),
        ({"input_file_id": "   "}, "Choose a JSONL file, or give the id of one."),
        ({"input_file_id": "file-1/../x"}, "A file id has no spaces or slashes"),
        ({"input_file_id": "file 1"}, "A file id has no spaces or slashes"),
        ({"endpoint": "/v1/unknown"}, "Select a valid choice."),
        ({"endpoint": ""}, "Choose the endpoint: it cannot be read from a file id."),
        ({"completion_window": "48h"}, "Select a valid choice."),
        ({"completion_window": "7d"}, "Select a valid choice."),
        ({"meta_key_0": "k" * 65}, "at most 64 characters"),
        ({"meta_value_0": "v" * 513}, "at most 512 characters"),
        ({"meta_key_1": "team"}, "The key “team” is used twice."),
        ({"meta_key_2": "", "meta_value_2": "orphan"}, "This value needs a key."),
        ({"meta_key_2": "batchweb_token", "meta_value_2": "x"}, "are reserved"),
        ({"meta_key_2": "batchweb_user", "meta_value_2": "x"}, "are reserved"),
        ({"meta_key_2": "job", "meta_value_2": "x"}, "not both"),
        ({"label": "l" * 513}, "at most 512 characters"),
        ({"output_expires_after_hours": "0"}, "greater than or equal to 1"),
        ({"output_expires_after_hours": "721"}, "less than or equal to 720"),
        ({"output_expires_after_hours": "-5"}, "greater than or equal to 1"),
        ({"output_expires_after_hours": "soon"}, "Enter a whole number."),
        ({"submission_token": ""}, "This form has expired or was damaged."),
        ({"submission_token": "t" * 65}, "This form has expired or was damaged."),
    ],
)
def test_invalid_input_is_refused_before_anything_is_sent(
    submitter_client, upstream, changes, error
):
    token = get_token(submitter_client)

    response = submitter_client.post(CREATE, form_data(token, **changes))

    assert response.status_code == 400
    assert error in text(response)
    assert len(upstream.calls) == 0
    assert not Batch.objects.exists()
    assert not Submission.objects.exists()
    assert not Event.objects.exists()


def test_the_longest_allowed_key_and_value_and_expiry_limits_are_accepted(
    submitter_client, upstream
):
    token = get_token(submitter_client)
    upstream.post(f"{API}/batches", json=created())

    response = submitter_client.post(
        CREATE,
        form_data(
            token, meta_key_2="k" * 64, meta_value_2="v" * 512, output_expires_after_hours="720"
        ),
    )

    assert response.status_code == 302
    (body,) = sent_bodies(upstream)
    assert body["metadata"]["k" * 64] == "v" * 512
    assert body["output_expires_after"]["seconds"] == 2592000


def test_an_invalid_form_keeps_what_was_typed(submitter_client, upstream):
    token = get_token(submitter_client)

    response = submitter_client.post(CREATE, form_data(token, completion_window="48h"))

    content = response.content.decode()
    assert 'value="file-in1"' in content
    assert 'value="nightly-eval"' in content
    assert 'value="team"' in content
    assert 'value="search"' in content
    assert f'value="{token}"' in content


def _many_pairs(n: int) -> dict[str, str]:
    data: dict[str, str] = {}
    for i in range(n):
        data[f"meta_key_{i}"] = f"key{i}"
        data[f"meta_value_{i}"] = f"value{i}"
    return data


def _form(**data: str) -> BatchCreateForm:
    base = {
        "input_file_id": "file-in1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "submission_token": "tok-form-0123456789abcde",
    }
    return BatchCreateForm(
        {**base, **data},
        connections=[Connection(slug="default", name="OpenAI", from_settings=True)],
    )


@pytest.fixture
def sixteen_rows(monkeypatch) -> None:
    """Give the form sixteen rows, whatever it shows, to reach past the API's limit of 16."""
    monkeypatch.setattr(batch_forms, "METADATA_ROWS", 16)


def test_fourteen_metadata_pairs_are_allowed(sixteen_rows):
    form = _form(**_many_pairs(14))

    assert form.is_valid(), form.errors
    assert len(form.cleaned_data["metadata"]) == 14


def test_fifteen_metadata_pairs_are_refused_leaving_room_for_batchwebs_two(sixteen_rows):
    form = _form(**_many_pairs(15))

    assert not form.is_valid()
    assert "At most 14 metadata pairs" in form.non_field_errors()[0]


def test_a_label_counts_as_one_of_the_fourteen_pairs(sixteen_rows):
    form = _form(label="nightly", **_many_pairs(14))

    assert not form.is_valid()
    assert "At most 14 metadata pairs" in form.non_field_errors()[0]


def test_too_many_metadata_pairs_are_refused_by_the_page_before_anything_is_sent(
    submitter_client, upstream, sixteen_rows
):
    token = get_token(submitter_client)
    data = {
        "input_file_id": "file-in1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "submission_token": token,
        **_many_pairs(15),
    }

    response = submitter_client.post(CREATE, data)

    assert response.status_code == 400
    assert "At most 14 metadata pairs" in text(response)
    assert len(upstream.calls) == 0


def test_blank_metadata_rows_are_skipped(sixteen_rows):
    form = _form(meta_key_3="team", meta_value_3="search")

    assert form.is_valid(), form.errors
    assert form.cleaned_data["metadata"] == {"team": "search"}


# --- Upstream refuses ---------------------------------------------------------------------------


def test_an_upstream_400_is_shown_on_the_form_with_the_input_kept(
    submitter_client, upstream, submitter
):
    token = get_token(submitter_client)
    upstream.post(
        f"{API}/batches",
        status=400,
        json={
            "error": {
                "message": "The input file file-in1 does not exist.",
                "type": "invalid_request_error",
                "param": "input_file_id",
                "code": None,
            }
        },
        headers={"x-request-id": "req_create400"},
    )

    response = submitter_client.post(CREATE, form_data(token))

    assert response.status_code == 400
    content = text(response)
    assert "The batch was not created." in content
    assert "The input file file-in1 does not exist." in content
    assert "req_create400" in content
    assert "Traceback" not in content
    raw = response.content.decode()
    for kept in ["file-in1", "nightly-eval", "team", "search", "owner", "ada", "48", token]:
        assert f'value="{kept}"' in raw, kept
    assert len(upstream.calls) == 1  # a 400 did nothing upstream: no search for the token
    assert not Batch.objects.exists()
    assert Submission.objects.get(token=token).state == Submission.State.FAILED
    assert Event.objects.get().action == Event.Action.CREATE_FAILED


def test_after_an_upstream_400_the_same_form_can_be_sent_again(submitter_client, upstream):
    token = get_token(submitter_client)
    upstream.post(
        f"{API}/batches", status=400, json={"error": {"message": "Bad file", "type": "invalid"}}
    )
    upstream.post(f"{API}/batches", json=created())
    upstream.get(f"{API}/batches", json=make_list([make_batch(id="batch_other")]))

    assert submitter_client.post(CREATE, form_data(token)).status_code == 400
    response = submitter_client.post(CREATE, form_data(token))

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-detail", args=["default", "batch_new1"])
    assert [b["metadata"]["batchweb_token"] for b in sent_bodies(upstream)] == [token, token]
    # A submission tried before always looks for its token first (it does not keep why it
    # failed), then creates.
    assert [c.request.method for c in upstream.calls] == ["POST", "GET", "POST"]
    assert Batch.objects.count() == 1


# --- One batch per form -------------------------------------------------------------------------


def test_submitting_the_same_form_twice_creates_one_batch(submitter_client, upstream):
    token = get_token(submitter_client)
    upstream.post(f"{API}/batches", json=created())

    first = submitter_client.post(CREATE, form_data(token))
    second = submitter_client.post(CREATE, form_data(token))

    assert first.status_code == second.status_code == 302
    assert (
        second["Location"]
        == first["Location"]
        == reverse("batch-detail", args=["default", "batch_new1"])
    )
    assert "already submitted" in messages_of(second)[-1]
    assert len(sent_bodies(upstream)) == 1
    assert Batch.objects.count() == 1
    assert Event.objects.filter(action=Event.Action.CREATE).count() == 1


def test_a_form_still_being_submitted_is_not_sent_again(submitter_client, upstream, submitter):
    token = get_token(submitter_client)
    Submission.objects.create(token=token, user=submitter)  # another request holds the token

    response = submitter_client.post(CREATE, form_data(token))

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-list")
    assert "already being submitted" in messages_of(response)[0]
    assert len(upstream.calls) == 0
    assert not Batch.objects.exists()


def test_a_timeout_on_create_finds_the_batch_by_its_token_and_goes_to_it(
    submitter_client, upstream, submitter
):
    token = get_token(submitter_client)
    upstream.post(f"{API}/batches", body=requests.exceptions.ReadTimeout("read timed out"))
    upstream.get(
        f"{API}/batches",
        json=make_list(
            [
                make_batch(id="batch_other", metadata={"batchweb_token": "someone-else"}),
                created("batch_made", batchweb_token=token, batchweb_user="sam"),
            ]
        ),
        match=[matchers.query_param_matcher({"limit": "100"})],
    )

    response = submitter_client.post(CREATE, form_data(token))

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-detail", args=["default", "batch_made"])
    assert len(sent_bodies(upstream)) == 1  # the create was not sent twice
    assert [c.request.method for c in upstream.calls] == ["POST", "GET"]
    batch = Batch.objects.get(openai_id="batch_made")
    assert batch.created_by == submitter
    assert batch.submission_token == token
    assert Submission.objects.get(token=token).batch == batch
    assert list(Event.objects.values_list("action", flat=True)) == [Event.Action.CREATE]


def test_a_timeout_on_create_with_no_batch_found_says_so_and_allows_a_resubmit(
    submitter_client, upstream, submitter
):
    token = get_token(submitter_client)
    upstream.post(f"{API}/batches", body=requests.exceptions.ReadTimeout("read timed out"))
    upstream.post(f"{API}/batches", json=created("batch_second", batchweb_token=token))
    upstream.get(f"{API}/batches", json=make_list([make_batch(id="batch_other")]))

    response = submitter_client.post(CREATE, form_data(token))

    assert response.status_code == 502
    content = text(response)
    assert "The batch was not created." in content
    assert "is not available right now" in content
    assert "within the time limit" in content
    assert "ReadTimeout" not in content
    assert "Traceback" not in content
    assert f'value="{token}"' in response.content.decode()
    assert not Batch.objects.exists()
    assert Submission.objects.get(token=token).state == Submission.State.FAILED

    again = submitter_client.post(CREATE, form_data(token))

    assert again.status_code == 302
    assert again["Location"] == reverse("batch-detail", args=["default", "batch_second"])
    assert [b["metadata"]["batchweb_token"] for b in sent_bodies(upstream)] == [token, token]
    assert Batch.objects.get().created_by == submitter
    assert Submission.objects.get(token=token).state == Submission.State.DONE


def test_a_server_error_on_create_also_looks_for_the_token(submitter_client, upstream):
    token = get_token(submitter_client)
    upstream.post(
        f"{API}/batches",
        status=502,
        json={"error": {"message": "Bad gateway", "type": "server_error"}},
    )
    upstream.get(f"{API}/batches", json=make_list([created("batch_made", batchweb_token=token)]))

    response = submitter_client.post(CREATE, form_data(token))

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-detail", args=["default", "batch_made"])
    assert len(sent_bodies(upstream)) == 1
    assert Batch.objects.count() == 1
