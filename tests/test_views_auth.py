"""Who may see and do what: sign-in, sign-out, the Viewers and Submitters roles."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.urls import reverse
from responses import matchers

from batches.models import Batch, Event
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

API = settings.OPENAI_BASE_URL
LOGIN = reverse("login")


@pytest.fixture
def running(db) -> Batch:
    return batch_upsert(payload=make_batch(id="batch_run1", status="in_progress")).batch


@pytest.fixture
def finished(db) -> Batch:
    return batch_upsert(
        payload=make_batch(id="batch_done1", status="completed", completed_at=1764003600)
    ).batch


PAGES = [
    ("get", "batch-list", {}),
    ("get", "batch-detail", {"slug": "default", "openai_id": "batch_run1"}),
    ("get", "batch-create", {}),
    ("post", "batch-create", {}),
    ("get", "batch-cancel", {"slug": "default", "openai_id": "batch_run1"}),
    ("post", "batch-cancel", {"slug": "default", "openai_id": "batch_run1"}),
    ("get", "activity", {}),
    ("post", "batch-sync", {}),
]


@pytest.mark.parametrize(("method", "name", "kwargs"), PAGES)
def test_every_page_redirects_anonymous_people_to_the_login_page_with_next(
    client, upstream, running, method, name, kwargs
):
    url = reverse(name, kwargs=kwargs)

    response = getattr(client, method)(url)

    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next={url}"
    assert Batch.objects.get(openai_id="batch_run1").status == "in_progress"
    assert not Event.objects.exists()
    assert len(upstream.calls) == 0


def test_the_login_page_renders_a_sign_in_form(client, db):
    response = client.get(LOGIN)

    assert response.status_code == 200
    content = response.content.decode()
    assert "Sign in to batchweb" in content
    assert 'name="username"' in content
    assert 'name="password"' in content
    assert "Upstream is failing" not in content


def test_signing_in_with_the_right_password_goes_to_next(client, viewer):
    response = client.post(
        LOGIN, {"username": "vic", "password": "pw-vic-123", "next": reverse("activity")}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("activity")
    assert client.get(reverse("batch-list")).status_code == 200


def test_signing_in_without_next_goes_to_the_batch_list(client, viewer):
    response = client.post(LOGIN, {"username": "vic", "password": "pw-vic-123"})

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-list")


def test_signing_in_with_a_wrong_password_says_so_and_stays_signed_out(client, viewer):
    response = client.post(LOGIN, {"username": "vic", "password": "wrong"})

    assert response.status_code == 200
    assert "That username and password do not match" in response.content.decode()
    assert client.get(reverse("batch-list")).status_code == 302


def test_signing_in_ignores_a_next_that_points_to_another_site(client, viewer):
    response = client.post(
        LOGIN, {"username": "vic", "password": "pw-vic-123", "next": "https://evil.example/"}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-list")


def test_sign_out_is_a_post_that_ends_the_session(viewer_client):
    assert viewer_client.get(reverse("batch-list")).status_code == 200

    response = viewer_client.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert "_auth_user_id" not in viewer_client.session
    assert viewer_client.get(reverse("batch-list")).status_code == 302


def test_sign_out_by_get_is_refused_and_keeps_the_session(viewer_client):
    response = viewer_client.get(reverse("logout"))

    assert response.status_code == 405
    assert viewer_client.get(reverse("batch-list")).status_code == 200


def test_every_page_has_a_sign_out_button_that_posts(viewer_client, running):
    content = viewer_client.get(reverse("batch-list")).content.decode()

    assert f'<form method="post" action="{reverse("logout")}"' in content
    assert "Sign out" in content
    assert "vic" in content


@pytest.mark.parametrize(
    ("method", "name", "kwargs"),
    [
        ("get", "batch-create", {}),
        ("post", "batch-create", {}),
        ("get", "batch-cancel", {"slug": "default", "openai_id": "batch_run1"}),
        ("post", "batch-cancel", {"slug": "default", "openai_id": "batch_run1"}),
    ],
)
def test_a_viewer_gets_the_friendly_403_page_on_create_and_cancel(
    viewer_client, upstream, running, method, name, kwargs
):
    response = getattr(viewer_client, method)(reverse(name, kwargs=kwargs))

    assert response.status_code == 403
    content = response.content.decode()
    assert "You cannot do that" in content
    assert "Submitters" in content
    assert "Traceback" not in content
    assert Batch.objects.get(openai_id="batch_run1").status == "in_progress"
    assert Batch.objects.count() == 1
    assert not Event.objects.exists()
    assert len(upstream.calls) == 0


def test_a_viewer_can_see_the_list_the_detail_and_the_activity(viewer_client, upstream, finished):
    assert viewer_client.get(reverse("batch-list")).status_code == 200
    detail = viewer_client.get(reverse("batch-detail", args=["default", "batch_done1"]))
    assert detail.status_code == 200
    assert "batch_done1" in detail.content.decode()
    assert viewer_client.get(reverse("activity")).status_code == 200
    assert len(upstream.calls) == 0


def test_the_new_batch_link_is_hidden_from_viewers(viewer_client, running):
    content = viewer_client.get(reverse("batch-list")).content.decode()

    assert f'href="{reverse("batch-create")}"' not in content
    assert "New batch" not in content


def test_the_new_batch_link_is_shown_to_submitters(submitter_client, running):
    content = submitter_client.get(reverse("batch-list")).content.decode()

    assert f'href="{reverse("batch-create")}"' in content


def test_the_cancel_button_is_hidden_from_viewers_on_a_running_batch(
    viewer_client, upstream, running
):
    upstream.get(f"{API}/batches/batch_run1", json=make_batch(id="batch_run1"))

    response = viewer_client.get(reverse("batch-detail", args=["default", "batch_run1"]))

    assert response.status_code == 200
    assert reverse("batch-cancel", args=["default", "batch_run1"]) not in response.content.decode()


def test_submitters_see_the_cancel_button_on_their_own_running_batch_only(
    submitter_client, submitter, upstream, running
):
    upstream.get(f"{API}/batches/batch_run1", json=make_batch(id="batch_run1"))
    cancel = reverse("batch-cancel", args=["default", "batch_run1"])

    others = submitter_client.get(reverse("batch-detail", args=["default", "batch_run1"]))
    refused = submitter_client.post(cancel)
    Batch.objects.filter(openai_id="batch_run1").update(created_by=submitter)
    own = submitter_client.get(reverse("batch-detail", args=["default", "batch_run1"]))

    assert cancel not in others.content.decode()
    assert refused.status_code == 403
    assert cancel in own.content.decode()


def test_operators_see_the_cancel_button_on_anyones_running_batch(
    operator_client, upstream, running
):
    upstream.get(f"{API}/batches/batch_run1", json=make_batch(id="batch_run1"))

    response = operator_client.get(reverse("batch-detail", args=["default", "batch_run1"]))

    assert reverse("batch-cancel", args=["default", "batch_run1"]) in response.content.decode()


def test_a_superuser_can_create_a_batch(client, admin_user, upstream):
    client.force_login(admin_user)
    form = client.get(reverse("batch-create"))
    token = form.context["form"].initial["submission_token"]
    upstream.post(
        f"{API}/batches",
        json=make_batch(id="batch_admin1", status="validating"),
        match=[
            matchers.json_params_matcher(
                {"metadata": {"batchweb_token": token, "batchweb_user": "alice"}},
                strict_match=False,
            )
        ],
    )

    response = client.post(
        reverse("batch-create"),
        {
            "input_file_id": "file-in1",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "submission_token": token,
        },
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("batch-detail", args=["default", "batch_admin1"])
    assert Batch.objects.get(openai_id="batch_admin1").created_by == admin_user


def test_a_superuser_can_cancel_a_batch(client, admin_user, upstream, running):
    client.force_login(admin_user)
    upstream.post(
        f"{API}/batches/batch_run1/cancel",
        json=make_batch(id="batch_run1", status="cancelling", cancelling_at=1764000500),
    )

    assert client.get(reverse("batch-cancel", args=["default", "batch_run1"])).status_code == 200
    response = client.post(reverse("batch-cancel", args=["default", "batch_run1"]))

    assert response.status_code == 302
    assert Batch.objects.get(openai_id="batch_run1").status == "cancelling"
    assert Event.objects.get(action=Event.Action.CANCEL).user == admin_user


def test_a_superuser_sees_the_new_batch_link_and_the_admin_link(client, admin_user, running):
    client.force_login(admin_user)

    content = client.get(reverse("batch-list")).content.decode()

    assert f'href="{reverse("batch-create")}"' in content
    assert f'href="{reverse("admin:index")}"' in content
