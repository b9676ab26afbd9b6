"""Cancelling a batch: confirm, cancel only what can be, and say clearly when upstream refuses."""

from __future__ import annotations

import html

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.urls import reverse

from batches.models import Batch, Event
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

API = settings.OPENAI_BASE_URL
CANCEL_URL = f"{API}/batches/batch_run1/cancel"


def cancel(openai_id: str = "batch_run1") -> str:
    return reverse("batch-cancel", args=["default", openai_id])


def detail(openai_id: str = "batch_run1") -> str:
    return reverse("batch-detail", args=["default", openai_id])


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def cancelling_payload() -> dict:
    return make_batch(id="batch_run1", status="cancelling", cancelling_at=1764000500)


@pytest.fixture
def running(db) -> Batch:
    return batch_upsert(payload=make_batch(id="batch_run1", status="in_progress")).batch


def test_get_shows_a_confirmation_page_and_cancels_nothing(operator_client, upstream, running):
    response = operator_client.get(cancel())

    assert response.status_code == 200
    content = html.unescape(response.content.decode())
    assert "Cancel this batch?" in content
    assert "batch_run1" in content
    assert "Yes, cancel the batch" in content
    assert '<form method="post" class="confirm-actions">' in content
    assert f'href="{detail()}">No, keep it running' in content
    assert len(upstream.calls) == 0
    assert Batch.objects.get().status == "in_progress"
    assert not Event.objects.exists()


def test_post_cancels_upstream_and_says_so(operator_client, upstream, operator, running):
    upstream.post(CANCEL_URL, json=cancelling_payload())

    response = operator_client.post(cancel())

    assert response.status_code == 302
    assert response["Location"] == detail()
    assert [(c.request.method, c.request.url) for c in upstream.calls] == [("POST", CANCEL_URL)]
    assert not upstream.calls[0].request.body
    batch = Batch.objects.get()
    assert batch.status == "cancelling"
    event = Event.objects.get()
    assert (event.action, event.user, event.batch) == (Event.Action.CANCEL, operator, batch)
    assert messages_of(response) == [
        ("success", "Cancellation requested. Requests already finished keep their results.")
    ]


def test_after_cancelling_the_detail_page_shows_cancelling_and_the_message(
    operator_client, upstream, running
):
    upstream.post(CANCEL_URL, json=cancelling_payload())
    upstream.get(f"{API}/batches/batch_run1", json=cancelling_payload())

    response = operator_client.post(cancel(), follow=True)

    assert response.status_code == 200
    content = response.content.decode()
    assert "Cancellation requested." in content
    assert '<span class="badge s-cancelling">cancelling</span>' in content
    assert "cancelled this batch" in content  # the history
    assert cancel() not in content  # a cancelling batch cannot be cancelled again


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled", "cancelling"])
def test_a_batch_that_is_no_longer_running_cannot_be_cancelled(operator_client, upstream, status):
    batch_upsert(payload=make_batch(id="batch_end", status=status))

    confirm = operator_client.get(cancel("batch_end"))
    response = operator_client.post(cancel("batch_end"))

    assert "can no longer be cancelled" in html.unescape(confirm.content.decode())
    assert "Yes, cancel the batch" not in confirm.content.decode()
    assert response.status_code == 302
    assert response["Location"] == detail("batch_end")
    ((level, text),) = messages_of(response)
    assert level == "error"
    assert "can no longer be cancelled" in text
    assert len(upstream.calls) == 0
    assert Batch.objects.get().status == status
    assert not Event.objects.exists()


def test_an_upstream_409_is_reported_and_the_batch_is_left_as_it_was(
    operator_client, upstream, operator, running, no_sleep
):
    upstream.post(
        CANCEL_URL,
        status=409,
        json={
            "error": {
                "message": "Cannot cancel a batch with status completed.",
                "type": "invalid_request_error",
            }
        },
        headers={"x-request-id": "req_cancel409"},
    )
    upstream.get(f"{API}/batches/batch_run1", json=make_batch(id="batch_run1"))

    response = operator_client.post(cancel(), follow=True)

    assert response.status_code == 200
    content = html.unescape(response.content.decode())
    assert "The batch was not cancelled." in content
    assert "HTTP 409" in content
    assert "Cannot cancel a batch with status completed." in content
    assert "req_cancel409" in content
    assert "Traceback" not in content
    assert Batch.objects.get().status == "in_progress"
    event = Event.objects.get()
    assert (event.action, event.user) == (Event.Action.CANCEL_FAILED, operator)


def test_an_upstream_500_is_reported_with_its_request_id(
    operator_client, upstream, running, no_sleep
):
    upstream.post(
        CANCEL_URL,
        status=500,
        json={"error": {"message": "The server had an error", "type": "server_error"}},
        headers={"x-request-id": "req_cancel500"},
    )

    response = operator_client.post(cancel())

    assert response.status_code == 302
    ((level, text),) = messages_of(response)
    assert level == "error"
    assert text.startswith("The batch was not cancelled.")
    assert "HTTP 500" in text
    assert "req_cancel500" in text
    assert Batch.objects.get().status == "in_progress"
    assert Event.objects.get().action == Event.Action.CANCEL_FAILED


def test_cancel_gives_up_as_soon_as_other_page_calls_do(
    operator_client, upstream, running, no_sleep
):
    """A person waits on this button: it uses the page's short budget (one retry), like the
    detail refresh and Sync now, not the worker's."""
    upstream.post(
        CANCEL_URL, status=503, json={"error": {"message": "Overloaded", "type": "server_error"}}
    )

    operator_client.post(cancel())

    assert len(upstream.calls) == 2
    assert len(no_sleep) == 1


def test_a_viewer_cannot_cancel(viewer_client, upstream, running):
    confirm = viewer_client.get(cancel())
    response = viewer_client.post(cancel())

    assert confirm.status_code == response.status_code == 403
    assert "You cannot do that" in response.content.decode()
    assert len(upstream.calls) == 0
    assert Batch.objects.get().status == "in_progress"


def test_cancelling_an_unknown_batch_is_a_404(operator_client, upstream, db):
    assert operator_client.get(cancel("batch_nope")).status_code == 404
    assert operator_client.post(cancel("batch_nope")).status_code == 404
    assert len(upstream.calls) == 0


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ("validating", True),
        ("in_progress", True),
        ("finalizing", True),
        ("cancelling", False),
        ("completed", False),
        ("failed", False),
        ("expired", False),
        ("cancelled", False),
    ],
)
def test_the_cancel_button_shows_only_on_batches_that_can_be_cancelled(
    operator_client, upstream, status, shown
):
    payload = make_batch(id="batch_b", status=status)
    batch_upsert(payload=payload)
    upstream.get(f"{API}/batches/batch_b", json=payload)

    content = operator_client.get(detail("batch_b")).content.decode()

    assert (cancel("batch_b") in content) is shown


def test_the_cancel_button_is_hidden_from_viewers(viewer_client, upstream, running):
    upstream.get(f"{API}/batches/batch_run1", json=make_batch(id="batch_run1"))

    content = viewer_client.get(detail()).content.decode()

    assert "Cancel batch" not in content
    assert cancel() not in content
