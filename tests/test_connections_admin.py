"""The Connection admin: a write-only key stored encrypted, validation, refusing to delete a
connection that has batches, and the Test connection action."""

from __future__ import annotations

import html

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from batches.models import Connection, SyncState, WebhookDelivery
from batches.services.batches import batch_upsert
from tests.conftest import make_batch, make_list

SECRET = "sk-proj-admin-secret-key-wxyz"
GATEWAY = "https://gateway.example.test/v1"
ADD_URL = reverse("admin:batches_connection_add")
LIST_URL = reverse("admin:batches_connection_changelist")


def change_url(connection: Connection) -> str:
    return reverse("admin:batches_connection_change", args=[connection.pk])


def delete_url(connection: Connection) -> str:
    return reverse("admin:batches_connection_delete", args=[connection.pk])


def text(response) -> str:
    return html.unescape(response.content.decode())


def form(**overrides) -> dict:
    """What the add/change form posts, as a browser sends it."""
    data = {
        "name": "Research",
        "slug": "research",
        "enabled": "on",
        "base_url": GATEWAY,
        "dialect": "openai",
        "auth_style": "bearer",
        "api_version": "2024-10-21",
        "organization": "",
        "project": "",
        "api_key": "",
        "key_env": "",
        "max_requests_per_file": "",
        "max_file_bytes": "",
        "allowed_endpoints": "[]",
        "output_expiry_min_hours": "",
        "output_expiry_max_hours": "",
        "deployments": "{}",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


@pytest.fixture(autouse=True)
def encryption_key(settings) -> None:
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def research(db) -> Connection:
    connection = Connection(name="Research", slug="research", base_url=GATEWAY)
    connection.set_key(SECRET)
    connection.save()
    return connection


# --- Adding and changing ------------------------------------------------------------------------


def test_adding_a_connection_stores_the_key_encrypted_and_never_shows_it(admin_client):
    response = admin_client.post(ADD_URL, form(api_key=SECRET), follow=True)

    assert response.status_code == 200
    connection = Connection.objects.get(slug="research")
    stored = Connection.objects.filter(pk=connection.pk).values_list("key_encrypted", flat=True)
    assert SECRET not in stored[0]
    assert connection.key_last4 == "wxyz"
    assert connection.api_key() == SECRET
    page = admin_client.get(change_url(connection))
    assert SECRET not in text(page)
    assert "stored, encrypted (ends in …wxyz)" in text(page)
    assert 'name="api_key"' in text(page)
    assert 'type="password"' in text(page)
    assert "Only its last 4 characters are shown again." in text(page)


def test_saving_without_a_key_keeps_the_current_one(admin_client, research):
    response = admin_client.post(change_url(research), form(name="Research lab"))

    assert response.status_code == 302
    research.refresh_from_db()
    assert research.name == "Research lab"
    assert research.api_key() == SECRET


def test_a_new_key_replaces_the_old_one(admin_client, research):
    admin_client.post(change_url(research), form(api_key="sk-proj-the-new-key-0000"))

    research.refresh_from_db()
    assert research.api_key() == "sk-proj-the-new-key-0000"
    assert research.key_last4 == "0000"


def test_choosing_an_environment_variable_drops_the_stored_key(admin_client, research):
    admin_client.post(change_url(research), form(key_env="RESEARCH_KEY"))

    research.refresh_from_db()
    assert research.key_env == "RESEARCH_KEY"
    assert research.key_encrypted == ""
    assert research.key_source() == "environment variable RESEARCH_KEY"


def test_without_an_encryption_key_the_form_says_what_to_set(admin_client, settings):
    settings.BATCHWEB_ENCRYPTION_KEY = ""

    response = admin_client.post(ADD_URL, form(api_key=SECRET))

    assert response.status_code == 200
    assert "BATCHWEB_ENCRYPTION_KEY is not set" in text(response)
    assert SECRET not in text(response)
    assert not Connection.objects.filter(slug="research").exists()


def test_a_connection_needs_a_key_or_a_variable(admin_client):
    response = admin_client.post(ADD_URL, form())

    assert response.status_code == 200
    assert "Give the API key, or the name of an environment variable" in text(response)
    assert not Connection.objects.filter(slug="research").exists()


def test_a_key_and_a_variable_together_are_refused(admin_client):
    response = admin_client.post(ADD_URL, form(api_key=SECRET, key_env="RESEARCH_KEY"))

    assert response.status_code == 200
    assert "not both" in text(response)
    assert SECRET not in text(response)


def test_the_models_own_validation_applies(admin_client):
    response = admin_client.post(
        ADD_URL,
        form(
            dialect="azure",
            auth_style="api-key",
            base_url="https://res.openai.azure.com",
            api_key=SECRET,
        ),
    )

    assert response.status_code == 200
    assert "Azure's v1 API lives under /openai/v1" in text(response)
    assert SECRET not in text(response)
    assert not Connection.objects.filter(slug="research").exists()


def test_groups_restrict_a_connection(admin_client):
    viewers = Group.objects.get(name="Viewers")

    admin_client.post(ADD_URL, form(api_key=SECRET, groups=[str(viewers.pk)]))

    assert list(Connection.objects.get(slug="research").groups.all()) == [viewers]


def test_the_add_form_prepopulates_the_slug_and_offers_group_selection(admin_client):
    page = text(admin_client.get(ADD_URL))

    assert "prepopulated" in page and "id_slug" in page
    assert "selectfilter" in page.lower()


# --- The list ---------------------------------------------------------------------------------


def test_the_list_shows_where_each_key_comes_from_and_how_sync_went(admin_client, research):
    Group.objects.get(name="Viewers").connections.add(research)
    state = SyncState.get(research)
    state.record_failure(RuntimeError("The OpenAI API is not available right now."))

    page = text(admin_client.get(LIST_URL))

    assert "Research" in page
    assert GATEWAY in page
    assert "stored, encrypted (ends in …wxyz)" in page
    assert "from environment (OPENAI_BASE_URL)" in page  # the default connection
    assert "Viewers" in page
    assert "everyone" in page
    assert "The OpenAI API is not available right now." in page
    assert SECRET not in page


def test_the_change_form_links_to_the_test_connection_button(admin_client, research):
    page = text(admin_client.get(change_url(research)))

    assert reverse("connection-detail", args=["research"]) + "#test" in page
    assert "Test connection" in page


# --- Deleting ------------------------------------------------------------------------------------


def test_a_connection_with_batches_cannot_be_deleted(admin_client, research):
    batch_upsert(payload=make_batch(id="batch_r1"), connection=research)

    response = admin_client.get(delete_url(research))

    assert response.status_code == 302
    assert response.url == change_url(research)
    assert any(
        level == "error" and "cannot be deleted" in text and "Disable it instead" in text
        for level, text in messages_of(response)
    )
    admin_client.post(delete_url(research), {"post": "yes"})
    assert Connection.objects.filter(pk=research.pk).exists()


def test_the_bulk_delete_action_refuses_connections_with_batches(admin_client, research):
    batch_upsert(payload=make_batch(id="batch_r1"), connection=research)

    response = admin_client.post(
        LIST_URL, {"action": "delete_selected", "_selected_action": [str(research.pk)]}
    )

    assert response.status_code == 302
    assert any("cannot be deleted" in text for _, text in messages_of(response))
    assert Connection.objects.filter(pk=research.pk).exists()


def test_a_connection_without_batches_can_be_deleted(admin_client, research):
    selected = {"action": "delete_selected", "_selected_action": [str(research.pk)]}

    confirm = admin_client.post(LIST_URL, selected)
    assert confirm.status_code == 200
    admin_client.post(LIST_URL, {**selected, "post": "yes"})

    assert not Connection.objects.filter(pk=research.pk).exists()


def test_the_single_delete_page_works_without_batches(admin_client, research):
    assert admin_client.get(delete_url(research)).status_code == 200

    admin_client.post(delete_url(research), {"post": "yes"})

    assert not Connection.objects.filter(pk=research.pk).exists()


# --- Test connection action ------------------------------------------------------------------


def test_the_test_action_reports_success_and_failure_as_messages(
    admin_client, research, no_network, no_sleep
):
    broken = Connection(name="Broken", slug="broken", base_url="https://broken.example.test/v1")
    broken.set_key("sk-broken-key-12345678")
    broken.save()
    no_network.get(f"{GATEWAY}/batches", json=make_list([make_batch(id="batch_1")]))
    no_network.get(
        "https://broken.example.test/v1/batches",
        json={"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}},
        status=401,
    )

    response = admin_client.post(
        LIST_URL,
        {"action": "test_connections", "_selected_action": [str(research.pk), str(broken.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    found = messages_of(response)
    assert any(
        level == "success" and text.startswith("Research: Connected to") for level, text in found
    )
    assert any(
        level == "error" and text.startswith("Broken:") and "refused the key" in text
        for level, text in found
    )
    assert SECRET not in str(found)
    assert "sk-broken-key-12345678" not in str(found)


def test_the_sync_columns_read_never_for_a_connection_never_synced(admin_client, research):
    state = SyncState.get(research)
    state.record_success(now=timezone.now())

    page = text(admin_client.get(LIST_URL))

    assert "never" in page  # the default connection
    assert "just now" in page  # research


# --- The webhook secret and the deliveries ------------------------------------------------------

WHSEC = "whsec_" + "c3ludGhldGljLXdlYmhvb2stc2VjcmV0"  # base64("synthetic-webhook-secret")


def test_the_webhook_secret_is_write_only_and_stored_encrypted(admin_client, research):
    response = admin_client.post(change_url(research), form(webhook_secret=WHSEC))

    assert response.status_code == 302
    research.refresh_from_db()
    assert research.webhook_secret() == WHSEC
    assert WHSEC not in research.webhook_secret_encrypted
    assert research.webhook_secret_last4 == "cmV0"
    page = text(admin_client.get(change_url(research)))
    assert WHSEC not in page
    assert 'name="webhook_secret"' in page
    assert "stored, encrypted (ends in …cmV0)" in page
    assert "Webhook signing secret" in page


def test_saving_without_a_webhook_secret_keeps_the_current_one(admin_client, research):
    research.set_webhook_secret(WHSEC)
    research.save()

    admin_client.post(change_url(research), form(name="Research lab"))

    research.refresh_from_db()
    assert research.webhook_secret() == WHSEC


def test_the_stored_webhook_secret_can_be_removed(admin_client, research):
    research.set_webhook_secret(WHSEC)
    research.save()

    admin_client.post(change_url(research), form(clear_webhook_secret="on"))

    research.refresh_from_db()
    assert (research.webhook_secret(), research.webhook_secret_encrypted) == ("", "")
    assert research.webhook_secret_source() == "none set"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("c3ludGhldGljLXdlYmhvb2stc2VjcmV0", "does not start with whsec_"),
        ("whsec_not base64 at all!", "is not base64 after whsec_"),
    ],
)
def test_a_webhook_secret_that_cannot_be_right_is_refused_without_echoing_it(
    admin_client, research, value, reason
):
    response = admin_client.post(change_url(research), form(webhook_secret=value))

    assert response.status_code == 200
    page = text(response)
    assert reason in page
    assert value not in page
    research.refresh_from_db()
    assert research.webhook_secret() == ""


def test_a_new_secret_and_removing_it_together_are_refused(admin_client, research):
    response = admin_client.post(
        change_url(research), form(webhook_secret=WHSEC, clear_webhook_secret="on")
    )

    assert response.status_code == 200
    assert "not both" in text(response)


def test_webhook_deliveries_are_read_only_in_the_admin_site(admin_client, research):
    delivery = WebhookDelivery.objects.create(
        connection=research, webhook_id="wh_1", event_type="batch.completed", accepted=True
    )
    change = reverse("admin:batches_webhookdelivery_change", args=[delivery.pk])

    listing = admin_client.get(reverse("admin:batches_webhookdelivery_changelist"))
    assert listing.status_code == 200
    assert "wh_1" in text(listing)
    assert admin_client.get(reverse("admin:batches_webhookdelivery_add")).status_code == 403
    assert admin_client.post(change, {"detail": "changed"}).status_code == 403
    delete = reverse("admin:batches_webhookdelivery_delete", args=[delivery.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    delivery.refresh_from_db()
    assert delivery.detail == ""
