"""The Connections pages: who sees which connection, what they see of it, and the Test
connection button (admins only)."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from batches.models import Connection, SyncState, WebhookDelivery
from batches.services.batches import batch_upsert
from tests.conftest import make_batch, make_list

SECRET = "sk-proj-views-secret-key-5678"
GATEWAY = "https://gateway.example.test/v1"
LIST = reverse("connection-list")


def detail(slug: str) -> str:
    return reverse("connection-detail", args=[slug])


def url_of_test(slug: str) -> str:
    return reverse("connection-test", args=[slug])


def text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture(autouse=True)
def encryption_key(settings) -> None:
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()


@pytest.fixture
def research(db) -> Connection:
    connection = Connection(
        name="Research",
        slug="research",
        base_url=GATEWAY,
        organization="org-research",
        project="proj_research",
        max_requests_per_file=1000,
    )
    connection.set_key(SECRET)
    connection.save()
    for n in range(3):
        batch_upsert(payload=make_batch(id=f"batch_r{n}"), connection=connection)
    return connection


@pytest.fixture
def secret_project(db) -> Connection:
    """A connection only the group "Finance" may see."""
    connection = Connection(name="Finance", slug="finance", base_url=GATEWAY)
    connection.set_key(SECRET)
    connection.save()
    connection.groups.add(Group.objects.create(name="Finance"))
    return connection


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


# --- Access ------------------------------------------------------------------------------------


def test_the_pages_need_a_sign_in(client, research):
    for url in (LIST, detail("research")):
        response = client.get(url)
        assert response.status_code == 302
        assert reverse("login") in response.url
    assert client.post(url_of_test("research")).status_code == 302


def test_a_viewer_sees_the_list_and_each_connection(viewer_client, research, no_network):
    response = viewer_client.get(LIST)

    assert response.status_code == 200
    page = text(response)
    assert f'href="{detail("research")}"' in page
    assert "OpenAI (or a compatible server)" in page
    assert viewer_client.get(detail("research")).status_code == 200
    assert len(no_network.calls) == 0  # the pages never call upstream


def test_a_connection_restricted_to_another_group_is_hidden_and_404(
    viewer_client, viewer, secret_project
):
    assert "Finance" not in text(viewer_client.get(LIST))
    assert viewer_client.get(detail("finance")).status_code == 404
    # Testing takes the Admins role: refused before the connection is looked up (learns nothing).
    assert viewer_client.post(url_of_test("finance")).status_code == 403

    viewer.groups.add(Group.objects.get(name="Finance"))
    assert "Finance" in text(viewer_client.get(LIST))
    assert viewer_client.get(detail("finance")).status_code == 200


def test_an_unknown_connection_is_404(viewer_client, research):
    assert viewer_client.get(detail("nope")).status_code == 404


# --- What each person sees --------------------------------------------------------------------


def test_the_list_shows_state_last_sync_and_batch_count(viewer_client, research):
    now = timezone.now()
    SyncState.get(research).record_success(now=now - dt.timedelta(hours=3))
    state = SyncState.get(research)
    error = RuntimeError("The OpenAI API is not available right now (HTTP 503).")
    error.request_id = "req_abc123"
    state.record_failure(error, now=now - dt.timedelta(minutes=5))

    page = text(viewer_client.get(LIST))

    table = page[page.index("<tbody>") :]
    row = table[table.index(f'href="{detail("research")}"') :]
    row = row[: row.index("</tr>")]
    assert "failing" in row
    assert "The OpenAI API is not available right now (HTTP 503)." in row
    assert "req_abc123" in row
    assert "3 h ago" in row
    assert "UTC" in row  # the exact time, on hover
    assert ">3<" in row  # batches


def test_a_connection_never_synced_says_so(viewer_client, research):
    page = text(viewer_client.get(detail("research")))

    assert "not synced yet" in page


def test_a_disabled_connection_says_so(viewer_client, research):
    research.enabled = False
    research.save()

    assert "disabled" in text(viewer_client.get(LIST))


def test_a_viewer_sees_neither_settings_nor_the_test_button(viewer_client, research):
    page = text(viewer_client.get(detail("research")))

    assert "Research" in page
    assert "3 batches" in page
    for hidden in (
        GATEWAY,
        "org-research",
        "proj_research",
        "…5678",
        "Test connection",
        url_of_test("research"),
        reverse("admin:batches_connection_change", args=[research.pk]),
        "Requests per file",
    ):
        assert hidden not in page, hidden
    assert SECRET not in page


def test_an_admin_sees_settings_limits_and_the_test_button(admin_client, research):
    viewers = Group.objects.get(name="Viewers")
    research.groups.add(viewers)

    page = text(admin_client.get(detail("research")))

    for shown in (
        GATEWAY,
        "Authorization: Bearer <key>",
        "org-research",
        "proj_research",
        "stored, encrypted (ends in …5678)",
        "1,000",  # requests per file
        "200.0\xa0MB",
        "/v1/chat/completions",
        "1 h to 30 d",
        "any model",
        "Viewers",
        reverse("admin:batches_connection_change", args=[research.pk]),
        f'action="{url_of_test("research")}#test-result"',
        "csrfmiddlewaretoken",
        '<button type="submit" class="primary">Test connection</button>',
    ):
        assert shown in page, shown
    assert SECRET not in page


def test_the_environment_connection_shows_where_its_settings_come_from(admin_client, settings):
    page = text(admin_client.get(detail("default")))

    assert settings.OPENAI_BASE_URL in page
    assert "from OPENAI_BASE_URL" in page
    assert "environment variable OPENAI_API_KEY" in page
    assert settings.OPENAI_API_KEY not in page


# --- Test connection ---------------------------------------------------------------------------


def test_a_viewer_may_not_test_a_connection(viewer_client, research, no_network):
    response = viewer_client.post(url_of_test("research"))

    assert response.status_code == 403
    assert len(no_network.calls) == 0


def test_testing_needs_a_post(admin_client, research):
    assert admin_client.get(url_of_test("research")).status_code == 405


def test_a_passing_test_shows_in_a_calm_box(admin_client, research, no_network):
    no_network.get(f"{GATEWAY}/batches", json=make_list([make_batch(id="batch_1")]))

    response = admin_client.post(url_of_test("research"))

    assert response.status_code == 200
    page = text(response)
    assert 'class="msg success"' in page
    assert "Test passed." in page
    assert f"Connected to {GATEWAY}" in page
    assert "answered with 1 batch;" in page
    assert SECRET not in page
    assert no_network.calls[0].request.headers["Authorization"] == f"Bearer {SECRET}"
    assert no_network.calls[0].request.headers["OpenAI-Project"] == "proj_research"


def test_a_failing_test_shows_the_cause_and_details_in_an_error_box(
    admin_client, research, no_network, no_sleep
):
    no_network.get(
        f"{GATEWAY}/batches",
        json={"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}},
        status=401,
        headers={"x-request-id": "req_refused"},
    )

    response = admin_client.post(url_of_test("research"))

    assert response.status_code == 200
    page = text(response)
    assert 'class="msg error"' in page
    assert 'role="alert"' in page
    assert "Test failed." in page
    assert "refused the key (HTTP 401)" in page
    assert "<li>" in page  # the details
    assert "req_refused" in page
    assert SECRET not in page


# --- Webhooks ------------------------------------------------------------------------------------

WHSEC = "whsec_" + "c3ludGhldGljLXdlYmhvb2stc2VjcmV0"  # base64("synthetic-webhook-secret")


def test_an_admin_sees_the_webhook_url_to_register_and_that_no_secret_is_set(
    admin_client, research
):
    page = text(admin_client.get(detail("research")))

    assert 'id="h-webhooks"' in page
    assert "http://testserver/webhooks/openai/research/" in page
    assert 'data-copy="http://testserver/webhooks/openai/research/"' in page
    assert "none set" in page
    assert "No webhook secret is set for this connection." in page
    assert "None received yet." in page


def test_the_secret_shows_by_its_last_four_characters_only(admin_client, research):
    research.set_webhook_secret(WHSEC)
    research.save()

    page = text(admin_client.get(detail("research")))

    assert "stored, encrypted (ends in …cmV0)" in page
    assert WHSEC not in page
    assert WHSEC.removeprefix("whsec_")[:-4] not in page
    assert "No webhook secret" not in page


def test_the_environment_connection_shows_openai_webhook_secret(admin_client, settings):
    settings.OPENAI_WEBHOOK_SECRET = WHSEC

    page = text(admin_client.get(detail("default")))

    assert "environment variable OPENAI_WEBHOOK_SECRET (ends in …cmV0)" in page
    assert WHSEC not in page


def test_the_last_ten_deliveries_are_listed_newest_first_with_links_to_cached_batches(
    admin_client, research
):
    now = timezone.now()
    for n in range(12):
        WebhookDelivery.objects.create(
            connection=research,
            webhook_id=f"wh_{n}",
            event_type="batch.completed",
            batch_openai_id="batch_r1" if n == 11 else f"batch_gone{n}",
            received_at=now - dt.timedelta(minutes=12 - n),
            accepted=n % 2 == 1,
            detail="cached as in_progress: refresh requested" if n % 2 else "no signature matches",
        )

    page = text(admin_client.get(detail("research")))
    section = page[page.index('id="h-webhooks"') :]

    assert section.count("<tr>") == 1 + 10  # the header row and ten deliveries
    assert "batch_gone1<" not in section  # the two oldest are not shown
    assert section.index("batch_r1") < section.index("batch_gone10")  # newest first
    link = reverse("batch-detail", args=["research", "batch_r1"])
    assert f'href="{link}"' in section
    assert "batch_gone10" in section and "/batch_gone10/" not in section  # not cached: no link
    assert "accepted" in section and "refused" in section
    assert "no signature matches" in section
    assert "batch.completed" in section


def test_deliveries_of_another_connection_are_not_listed(admin_client, research, secret_project):
    WebhookDelivery.objects.create(
        connection=secret_project, webhook_id="wh_x", batch_openai_id="batch_finance"
    )

    page = text(admin_client.get(detail("research")))

    assert "batch_finance" not in page


def test_a_viewer_sees_no_webhooks_section(viewer_client, research):
    research.set_webhook_secret(WHSEC)
    research.save()
    WebhookDelivery.objects.create(connection=research, webhook_id="wh_1", batch_openai_id="b")

    page = text(viewer_client.get(detail("research")))

    assert "h-webhooks" not in page
    assert "/webhooks/openai/" not in page
    assert "cmV0" not in page
