"""Capacity in the pages: the confirm page's warning, the explanation and the "Submit again when
there is room" action on a batch's page, stopping the wait, the limits in the admin site and
on the connection page, and who is refused what."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from batches.models import (
    CapacityLimit,
    CapacityWait,
    Connection,
    Event,
    Submission,
    default_connection,
)
from batches.services import capacity as cap
from tests.test_capacity import LIMIT_MESSAGE, MODEL, cached, failed_for_room, limit

pytestmark = pytest.mark.django_db

API = settings.OPENAI_BASE_URL
CREATE = reverse("batch-create")
ADMIN_ADD = reverse("admin:batches_capacitylimit_add")


def plain(response) -> str:
    """The page's text without tags, spaces collapsed: what a person reads."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", response.content.decode())).split())


def page_url(batch) -> str:
    return reverse("batch-detail", args=[batch.connection.slug, batch.openai_id])


def wait_url(batch) -> str:
    return reverse("batch-capacity-wait", args=[batch.connection.slug, batch.openai_id])


def cancel_url(batch) -> str:
    return reverse("batch-capacity-cancel", args=[batch.connection.slug, batch.openai_id])


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def chat_file(lines: int, *, chars: int = 400) -> bytes:
    """`lines` requests of `chars` characters of text each: chars ÷ 4 tokens apiece."""
    return b"".join(
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": "x" * chars}]},
            }
        ).encode()
        + b"\n"
        for i in range(lines)
    )


def checked(client, content: bytes) -> Submission:
    """Send the create form with a file; the checked submission waits for confirmation."""
    form = client.get(CREATE).content.decode()
    token = re.search(r'name="submission_token" value="([^"]+)"', form).group(1)
    response = client.post(
        CREATE,
        {
            "input_file": SimpleUploadedFile("in.jsonl", content, content_type="application/jsonl"),
            "endpoint": "",
            "completion_window": "24h",
            "submission_token": token,
        },
    )
    assert response.status_code == 302, plain(response)
    return Submission.objects.get(token=token)


def confirm_url(submission: Submission) -> str:
    return reverse("submission-confirm", args=[submission.token])


# --- The confirm page -------------------------------------------------------------------------


def test_the_confirm_page_warns_before_a_batch_that_would_pass_the_limit(
    submitter_client, upstream, data_dir
):
    cached("batch_running", tokens=4000)
    limit(5000)
    submission = checked(submitter_client, chat_file(20))  # about 2,000 tokens of text
    needed = submission.facts["estimated_input_tokens"]
    assert needed > 1000

    text = plain(submitter_client.get(confirm_url(submission)))

    assert "This batch would pass the enqueued-token limit." in text
    assert f"It needs about {needed:,} tokens and about 1,000 are free." in text
    assert "Limit 5,000 tokens; queued now: about 4,000 tokens in 1 unfinished batch;" in text
    assert len(upstream.calls) == 0  # estimated from the cache, nothing asked upstream


def test_the_confirm_page_says_how_much_room_is_left_when_the_batch_fits(
    submitter_client, upstream, data_dir
):
    cached("batch_running", tokens=4000)
    limit(100_000)
    submission = checked(submitter_client, chat_file(3))

    text = plain(submitter_client.get(confirm_url(submission)))

    assert "There is room for it: about 96,000 of 100,000 enqueued tokens are free." in text
    assert "would pass" not in text


def test_the_confirm_page_says_when_no_limit_is_set(submitter_client, upstream, data_dir):
    submission = checked(submitter_client, chat_file(3))

    text = plain(submitter_client.get(confirm_url(submission)))

    assert "No enqueued-token limit is set for gpt-4o-mini on OpenAI" in text
    assert "batchweb cannot warn before the provider's limit" in text


def test_a_create_refused_for_lack_of_room_offers_to_submit_when_there_is_room(
    submitter_client, submitter, upstream, data_dir
):
    submission = checked(submitter_client, chat_file(3))
    upstream.post(f"{API}/files", json={"id": "file-up1", "object": "file", "bytes": 10,
                                        "created_at": 1764000000, "filename": "in.jsonl",
                                        "purpose": "batch", "status": "processed"})  # fmt: skip
    upstream.post(
        f"{API}/batches",
        status=400,
        json={"error": {"message": LIMIT_MESSAGE, "type": "invalid_request_error",
                        "code": "token_limit_exceeded", "param": None}},
    )  # fmt: skip

    refused = submitter_client.post(confirm_url(submission))

    assert refused.status_code == 400
    text = plain(refused)
    assert "refused the batch because its queue of enqueued tokens for gpt-4o-mini is full" in text
    assert "Submit when there is room" in text
    assert "Traceback" not in text
    # The button, then the page shows the wait.
    queued = submitter_client.post(reverse("submission-capacity-wait", args=[submission.token]))
    assert queued["Location"] == confirm_url(submission)
    wait = CapacityWait.objects.get()
    assert (wait.submission, wait.batch, wait.user) == (submission, None, submitter)
    page = plain(submitter_client.get(confirm_url(submission)))
    assert "Waiting for room since" in page
    assert "tokens needed" in page and "Stop waiting" in page
    assert "Submit when there is room" not in page
    event = Event.objects.get(action=Event.Action.CAPACITY_WAIT)
    assert (event.batch, event.connection, event.target) == (None, default_connection(), "in.jsonl")

    stopped = submitter_client.post(reverse("submission-capacity-cancel", args=[submission.token]))

    assert stopped["Location"] == confirm_url(submission)
    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.CANCELLED
    assert "The wait for room was stopped" in plain(submitter_client.get(confirm_url(submission)))


def test_a_submission_that_was_not_refused_for_room_cannot_wait(
    submitter_client, upstream, data_dir
):
    submission = checked(submitter_client, chat_file(3))

    response = submitter_client.post(
        reverse("submission-capacity-wait", args=[submission.token]), follow=True
    )

    assert "Only a batch refused because the token queue was full waits." in plain(response)
    assert not CapacityWait.objects.exists()


def test_someone_else_s_submission_answers_404(client, submitter, operator, upstream):
    Submission.objects.create(token="tok-sam", user=submitter, state="failed")
    client.force_login(operator)

    response = client.post(reverse("submission-capacity-wait", args=["tok-sam"]))

    assert response.status_code == 404


# --- The batch page -------------------------------------------------------------------------


def test_a_batch_that_failed_for_lack_of_room_is_explained_with_the_action(
    submitter_client, upstream
):
    full = failed_for_room(tokens=3000)
    cached("batch_running", tokens=4000)
    limit(5000)

    text = plain(submitter_client.get(page_url(full)))

    assert "Not enough room in the token queue" in text
    assert "The provider's queue of enqueued tokens for gpt-4o-mini was full" in text
    assert "Nothing ran and nothing is billed." in text
    assert "Limit 5,000 tokens; queued now: about 4,000 tokens" in text
    assert "This batch needs about 3,000." in text
    assert "Submit again when there is room" in text


def test_a_viewer_reads_the_explanation_without_the_button(viewer_client, upstream):
    full = failed_for_room()

    text = plain(viewer_client.get(page_url(full)))

    assert "Not enough room in the token queue" in text
    assert "Submit again when there is room" not in text


def test_a_batch_that_failed_otherwise_has_no_capacity_panel(submitter_client, upstream):
    bad = cached(
        "batch_bad",
        status="failed",
        errors={"object": "list", "data": [{"code": "invalid_json_line", "message": "bad"}]},
    )

    assert "token queue" not in plain(submitter_client.get(page_url(bad)))


def test_pressing_the_button_queues_the_batch_and_the_page_shows_the_wait(
    submitter_client, submitter, upstream
):
    full = failed_for_room(tokens=3000)
    cached("batch_running", tokens=4500)
    limit(5000)

    response = submitter_client.post(wait_url(full), follow=True)

    text = plain(response)
    assert (
        "It will be submitted again by the sync worker as soon as the estimate leaves room." in text
    )
    assert "Waiting for room since" in text
    assert "3,000 tokens needed, 500 free." in text
    assert "Stop waiting" in text and "Submit again when there is room" not in text
    assert CapacityWait.objects.get().user == submitter
    assert "queued to resubmit when there is room this batch" in text  # the history
    assert len(upstream.calls) == 0  # the worker submits, not the page


def test_the_owner_stops_the_wait_and_the_history_says_so(submitter_client, submitter, upstream):
    full = failed_for_room()
    cap.capacity_wait_for_batch(batch=full, user=submitter)

    response = submitter_client.post(cancel_url(full), follow=True)

    text = plain(response)
    assert "Stopped waiting: it will not be submitted again." in text
    assert "The wait for room was stopped" in text
    assert "stopped waiting for room to resubmit this batch" in text
    assert "Submit again when there is room" in text  # it may be queued again


def test_an_operator_may_stop_anyone_s_wait(client, operator, submitter, upstream):
    full = failed_for_room()
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    client.force_login(operator)

    client.post(cancel_url(full))

    wait.refresh_from_db()
    assert (wait.state, wait.reason) == (CapacityWait.State.CANCELLED, "cancelled by olga")


def test_another_submitter_may_not_stop_the_wait(client, submitter, upstream):
    full = failed_for_room()
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    other = User.objects.create_user("sue", password="pw-sue-123")
    other.groups.add(Group.objects.get(name="Submitters"))
    client.force_login(other)

    response = client.post(cancel_url(full))

    assert response.status_code == 403
    wait.refresh_from_db()
    assert wait.state == CapacityWait.State.WAITING


def test_a_viewer_may_neither_queue_nor_stop(viewer_client, submitter, upstream):
    full = failed_for_room()

    assert viewer_client.post(wait_url(full)).status_code == 403
    cap.capacity_wait_for_batch(batch=full, user=submitter)
    assert viewer_client.post(cancel_url(full)).status_code == 403
    assert CapacityWait.objects.get().state == CapacityWait.State.WAITING


def test_a_member_outside_the_connection_s_groups_gets_404(operator_client, upstream):
    full = failed_for_room()
    research = Group.objects.create(name="Research")
    default_connection().groups.add(research)

    assert operator_client.post(wait_url(full)).status_code == 404
    assert operator_client.post(cancel_url(full)).status_code == 404
    assert not CapacityWait.objects.exists()


def test_a_disabled_connection_takes_no_waits(submitter_client, upstream):
    full = failed_for_room()
    Connection.objects.filter(pk=full.connection_id).update(enabled=False)

    assert submitter_client.post(wait_url(full)).status_code == 403
    assert not CapacityWait.objects.exists()


def test_get_is_not_allowed_and_a_post_needs_the_csrf_token(submitter, upstream):
    full = failed_for_room()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(submitter)

    assert strict.get(wait_url(full)).status_code == 405
    assert strict.post(wait_url(full)).status_code == 403
    assert not CapacityWait.objects.exists()


def test_the_page_links_the_batch_submitted_again(submitter_client, submitter, upstream):
    full = failed_for_room()
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    again = cached("batch_again", tokens=3000)
    CapacityWait.objects.filter(pk=wait.pk).update(state="submitted", new_batch=again)

    text = plain(submitter_client.get(page_url(full)))

    assert "Submitted again" in text and "as batch_again" in text
    assert "Submit again when there is room" not in text


# --- Limits: the admin site and the connection page ------------------------------------------


def limit_form(**changes: str) -> dict[str, Any]:
    data = {
        "connection": str(default_connection().pk),
        "model": "gpt-4.1",
        "enqueued_tokens": "200,000,000",
        "note": "Azure default",
    }
    data.update(changes)
    return data


def test_an_admin_sets_a_limit_written_with_commas_and_it_is_audited(client, admin_user):
    client.force_login(admin_user)

    response = client.post(ADMIN_ADD, limit_form())

    assert response.status_code == 302
    saved = CapacityLimit.objects.get()
    assert (saved.model, saved.enqueued_tokens) == ("gpt-4.1", 200_000_000)
    assert Event.objects.filter(action=Event.Action.ADMIN_ADD, target__contains="gpt-4.1").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5", "A limit must be more than zero tokens."),
        ("0", "A limit must be more than zero tokens."),
        ("lots", "“lots” is not a number of tokens: enter a whole number such as 200000000"),
        ("1.5e9", "“1.5e9” is not a number of tokens"),
        ("", "This field is required."),
        ("99999999999999999", "more than any provider allows"),
    ],
)
def test_a_negative_zero_or_non_numeric_limit_is_refused_with_a_clear_message(
    client, admin_user, value, message
):
    client.force_login(admin_user)

    response = client.post(ADMIN_ADD, limit_form(enqueued_tokens=value))

    assert response.status_code == 200
    assert message in html.unescape(response.content.decode())
    assert not CapacityLimit.objects.exists()


def test_the_admin_pages_show_the_published_defaults_as_hints(client, admin_user):
    client.force_login(admin_user)
    limit(5000)
    cached("batch_running", tokens=1200)

    listing = plain(client.get(reverse("admin:batches_capacitylimit_changelist")))
    adding = plain(client.get(ADMIN_ADD))

    for text in (listing, adding):
        assert "gpt-4.1 200,000,000" in text
        assert "gpt-4o-mini 1,000,000,000" in text
        assert "depends on the usage tier" in text
    assert "about 1,200 tokens in 1 unfinished batch" in listing  # the estimate column


def test_the_connection_page_shows_each_model_s_limit_estimate_and_waits(
    client, admin_user, submitter, upstream
):
    limit(5000)
    cached("batch_running", tokens=1200)
    cached("batch_elsewhere", model="gpt-4.1-2025-04-14")
    cap.capacity_wait_for_batch(batch=failed_for_room("batch_full"), user=submitter)
    client.force_login(admin_user)

    text = plain(client.get(reverse("connection-detail", args=["default"])))

    assert (
        "gpt-4.1 not set at least 0 in 1 batch (1 of unknown size, made outside batchweb) —" in text
    )
    assert "gpt-4o-mini 5,000 about 1,200 in 1 batch 3,800 (24% used)" in text
    assert "Waiting for room batch_full (gpt-4o-mini, 3,000 tokens needed)" in text
    assert "Stop waiting" in text
    assert "The providers' published defaults" in text


def test_a_viewer_sees_the_estimate_but_not_the_defaults_or_the_stop_button(
    viewer_client, submitter, upstream
):
    limit(5000)
    cap.capacity_wait_for_batch(batch=failed_for_room("batch_full"), user=submitter)

    text = plain(viewer_client.get(reverse("connection-detail", args=["default"])))

    assert "gpt-4o-mini 5,000" in text
    assert "Waiting for room batch_full" in text
    assert "Stop waiting" not in text and "published defaults" not in text


def test_pages_hold_no_inline_style_or_script(submitter_client, submitter, upstream):
    full = failed_for_room()
    cap.capacity_wait_for_batch(batch=full, user=submitter)

    for url in (page_url(full), reverse("connection-detail", args=["default"])):
        body = submitter_client.get(url).content.decode()
        section = body[body.index('id="capacity"') :]
        section = section[: section.index("</section>")]
        assert "style=" not in section and "<script" not in section


def test_the_admin_lists_the_waits_read_only(client, admin_user, submitter):
    cap.capacity_wait_for_batch(batch=failed_for_room("batch_full"), user=submitter)
    client.force_login(admin_user)

    page = client.get(reverse("admin:batches_capacitywait_changelist")).content.decode()
    cells = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())

    assert "OpenAI gpt-4o-mini 3000 waiting for room sam" in cells
    assert client.get(reverse("admin:batches_capacitywait_add")).status_code == 403


def test_the_page_says_when_upstream_refused_the_last_try_and_when_the_next_is(
    submitter_client, submitter, upstream
):
    from datetime import timedelta

    from django.utils import timezone

    full = failed_for_room()
    wait = cap.capacity_wait_for_batch(batch=full, user=submitter)
    CapacityWait.objects.filter(pk=wait.pk).update(
        reason="The OpenAI API rejected the request (HTTP 400): Enqueued token limit reached.",
        attempts=1,
        not_before=timezone.now() + timedelta(minutes=2, seconds=30),
    )

    text = plain(submitter_client.get(page_url(full)))

    assert "Last try: The OpenAI API rejected the request (HTTP 400)" in text
    assert "Next try in 2 min." in text
