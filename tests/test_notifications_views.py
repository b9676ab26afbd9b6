"""The pages of notifications: the Watch button, the profile page, and the admin site's
channels and outbox."""

from __future__ import annotations

import html

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import User
from django.urls import reverse

from batches.models import Batch, Channel, Event, NotificationPreference, Outbox, Watch
from batches.services.batches import batch_upsert
from batches.services.notifications import settings_channel
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db

API = settings.OPENAI_BASE_URL
PROFILE = reverse("profile")
HOOK = "https://hooks.example.test/services/T000/B000/secret-path-XYZ"


def text(response) -> str:
    return html.unescape(response.content.decode())


def watch_url(batch: Batch) -> str:
    return reverse("batch-watch", args=[batch.connection.slug, batch.openai_id])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def running(db) -> Batch:
    return batch_upsert(payload=make_batch(id="batch_w1", status="in_progress")).batch


@pytest.fixture
def finished(db) -> Batch:
    return batch_upsert(payload=make_batch(id="batch_w2", status="completed")).batch


# --- Watch ------------------------------------------------------------------------------------


def test_watch_then_stop_watching_each_recorded_once(viewer_client, viewer, running):
    response = viewer_client.post(watch_url(running), {"watch": "on"}, follow=True)

    assert response.redirect_chain[-1][0] == running.get_absolute_url()
    assert Watch.objects.filter(user=viewer, batch=running).exists()
    assert "vic@example.com is told when it ends" in " ".join(messages_of(response))
    viewer_client.post(watch_url(running), {"watch": "on"})  # a second press: no change
    assert Watch.objects.count() == 1

    viewer_client.post(watch_url(running), {"watch": "off"})

    assert not Watch.objects.exists()
    actions = list(Event.objects.order_by("id").values_list("action", "username", "batch"))
    assert actions == [("watch", "vic", running.pk), ("unwatch", "vic", running.pk)]


def test_a_press_without_a_choice_toggles(viewer_client, viewer, running):
    viewer_client.post(watch_url(running))
    assert Watch.objects.filter(user=viewer).exists()

    viewer_client.post(watch_url(running))
    assert not Watch.objects.exists()


def test_someone_without_an_email_address_is_told_to_add_one(viewer_client, viewer, running):
    User.objects.filter(pk=viewer.pk).update(email="")

    response = viewer_client.post(watch_url(running), {"watch": "on"}, follow=True)

    assert "has no email address" in " ".join(messages_of(response))


def test_a_finished_batch_cannot_be_watched_any_more(viewer_client, finished):
    response = viewer_client.post(watch_url(finished), {"watch": "on"}, follow=True)

    assert not Watch.objects.exists()
    assert "nothing more to tell" in " ".join(messages_of(response))


def test_watching_goes_back_to_a_page_of_this_site_only(viewer_client, running):
    back = viewer_client.post(watch_url(running), {"watch": "on", "next": PROFILE})
    away = viewer_client.post(watch_url(running), {"watch": "off", "next": "https://evil.test/"})

    assert back.url == PROFILE
    assert away.url == running.get_absolute_url()


def test_a_batch_of_a_connection_the_person_may_not_see_is_404(viewer_client, research):
    hidden = batch_upsert(
        payload=make_batch(id="batch_secret", status="in_progress"), connection=research
    ).batch

    response = viewer_client.post(watch_url(hidden), {"watch": "on"})

    assert response.status_code == 404
    assert not Watch.objects.exists()


def test_watching_needs_a_sign_in_a_role_and_a_post(client, running):
    anonymous = client.post(watch_url(running))
    assert anonymous.status_code == 302 and anonymous.url.startswith(reverse("login"))
    nobody = User.objects.create_user("nobody", "n@example.com", "pw-nobody-123")
    client.force_login(nobody)
    assert client.post(watch_url(running)).status_code == 403
    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw-root-123"))
    assert client.get(watch_url(running)).status_code == 405
    assert not Watch.objects.exists()


def test_the_batch_page_has_the_button_and_says_who_watches(
    viewer_client, viewer, submitter, running, upstream
):
    upstream.get(f"{API}/batches/batch_w1", json=make_batch(id="batch_w1", status="in_progress"))
    Watch.objects.create(user=submitter, batch=running)

    page = text(viewer_client.get(running.get_absolute_url()))

    assert f'action="{watch_url(running)}"' in page
    assert 'name="watch" value="on"' in page and ">Watch</button>" in page
    assert "1 person watches it" in page
    assert "csrfmiddlewaretoken" in page

    Watch.objects.create(user=viewer, batch=running)
    page = text(viewer_client.get(running.get_absolute_url()))

    assert ">Stop watching</button>" in page and 'value="off"' in page
    assert "you and 1 other watch it" in page


def test_a_finished_batch_has_no_watch_button(viewer_client, finished):
    page = text(viewer_client.get(finished.get_absolute_url()))

    assert watch_url(finished) not in page


# --- The profile page -------------------------------------------------------------------------


def test_the_top_bar_name_leads_to_the_profile(viewer_client):
    page = text(viewer_client.get(reverse("batch-list")))

    assert f'<a class="who" href="{PROFILE}"' in page


def test_the_profile_shows_the_defaults_and_the_watched_batches(
    viewer_client, viewer, running, finished, research
):
    hidden = batch_upsert(
        payload=make_batch(id="batch_secret", status="in_progress"), connection=research
    ).batch
    for batch in (running, finished, hidden):
        Watch.objects.create(user=viewer, batch=batch)

    response = viewer_client.get(PROFILE)

    assert response.status_code == 200
    page = text(response)
    assert 'value="vic@example.com"' in page
    assert 'id="id_my_batches" checked' in page
    assert 'id="id_watched" checked' in page
    assert 'id="id_at_risk" checked' not in page and 'id="id_at_risk"' in page
    assert 'id="id_at_risk_helptext"' in page
    assert running.get_absolute_url() in page and finished.get_absolute_url() in page
    assert "batch_secret" not in page  # a connection they may no longer see


def test_saving_the_profile_keeps_the_choices_and_asks_to_verify_the_address(
    viewer_client, viewer, mailoutbox
):
    response = viewer_client.post(
        PROFILE, {"email": "  victor@example.org ", "watched": "on", "at_risk": "on"}, follow=True
    )

    said = " ".join(messages_of(response))
    assert "Your notification settings are saved." in said
    assert "We emailed a link to victor@example.org" in said
    viewer.refresh_from_db()
    assert viewer.email == "vic@example.com"  # until the link is opened (tests/test_views_profile)
    assert [m.to for m in mailoutbox] == [["victor@example.org"]]
    preference = NotificationPreference.objects.get(user=viewer)
    assert (preference.my_batches, preference.watched, preference.at_risk) == (False, True, True)


def test_an_invalid_address_is_refused_with_a_message_and_nothing_is_saved(viewer_client, viewer):
    response = viewer_client.post(PROFILE, {"email": "not an address", "my_batches": "on"})

    assert response.status_code == 200
    page = text(response)
    assert "Nothing was saved" in page
    assert "Enter a valid email address." in page
    assert 'aria-invalid="true"' in page
    viewer.refresh_from_db()
    assert viewer.email == "vic@example.com"
    assert not NotificationPreference.objects.exists()


def test_the_profile_needs_a_sign_in(client):
    response = client.get(PROFILE)

    assert response.status_code == 302 and response.url.startswith(reverse("login"))


# --- The admin site ---------------------------------------------------------------------------


@pytest.fixture
def encryption_key(settings) -> str:
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()
    return settings.BATCHWEB_ENCRYPTION_KEY


def test_a_channel_s_url_and_secret_are_stored_encrypted_and_never_shown(
    client, admin_user, encryption_key
):
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:batches_channel_add"),
        {
            "name": "Team",
            "kind": "json",
            "enabled": "on",
            "webhook_url": HOOK,
            "secret": "hmac-secret-value",
        },
    )

    assert response.status_code == 302, text(response)
    made = Channel.objects.get()
    assert (made.url(), made.secret(), made.url_host) == (HOOK, "hmac-secret-value", made.url_host)
    assert made.url_host == "hooks.example.test"
    assert "secret-path" not in made.url_encrypted
    for url in (
        reverse("admin:batches_channel_changelist"),
        reverse("admin:batches_channel_change", args=[made.pk]),
    ):
        page = text(client.get(url))
        assert "hooks.example.test" in page
        assert "secret-path" not in page and "hmac-secret-value" not in page


def test_a_channel_keeps_its_url_when_the_field_is_left_empty(client, admin_user, encryption_key):
    client.force_login(admin_user)
    made = Channel(name="Team")
    made.set_url(HOOK)
    made.save()

    client.post(
        reverse("admin:batches_channel_change", args=[made.pk]),
        {"name": "Team renamed", "kind": "slack", "enabled": "on", "webhook_url": ""},
    )

    made.refresh_from_db()
    assert (made.name, made.url()) == ("Team renamed", HOOK)


def test_a_new_channel_needs_an_http_url(client, admin_user, encryption_key):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:batches_channel_add"),
        {"name": "Team", "kind": "slack", "enabled": "on", "webhook_url": ""},
    )

    assert response.status_code == 200
    assert "Give the webhook URL." in text(response)
    assert not Channel.objects.exists()


def test_the_outbox_shows_dead_letters_and_try_again_sends_them_once_more(
    client, admin_user, finished
):
    dead = Outbox.objects.create(
        key="k1",
        channel="email",
        recipient="sam@example.com",
        batch=finished,
        event="completed",
        subject="Batch x completed (OpenAI)",
        body="…",
        state="dead",
        attempts=8,
        last_error="Could not reach the mail server: ConnectionRefusedError",
    )
    client.force_login(admin_user)
    changelist = reverse("admin:batches_outbox_changelist")

    team = Channel(name="Team", url_host="hooks.example.test", url_encrypted="x")
    team.save()
    Outbox.objects.create(
        key="k2", channel="webhook", recipient=str(team.pk), event="completed", subject="s"
    )

    page = text(client.get(changelist, {"state__exact": "dead"}))
    assert "sam@example.com" in page and "ConnectionRefusedError" in page
    assert "Team (team channel)" not in page  # waiting, not dead
    assert "Team (team channel)" in text(client.get(changelist))
    assert reverse("admin:batches_outbox_add") not in page

    response = client.post(
        changelist, {"action": "try_again", "_selected_action": [dead.pk]}, follow=True
    )

    assert response.status_code == 200
    dead.refresh_from_db()
    assert (dead.state, dead.attempts, dead.lease_until) == ("pending", 0, None)
    assert Event.objects.filter(action=Event.Action.ADMIN_CHANGE, target="notifications").exists()
    change = client.get(reverse("admin:batches_outbox_change", args=[dead.pk]))
    assert change.status_code == 200 and 'name="_save"' not in text(change)


def test_the_settings_channel_shows_where_its_url_comes_from(client, admin_user, settings):
    settings.BATCHWEB_NOTIFY_WEBHOOK_URL = HOOK
    made = settings_channel()
    client.force_login(admin_user)

    page = text(client.get(reverse("admin:batches_channel_change", args=[made.pk])))

    assert "BATCHWEB_NOTIFY_WEBHOOK_URL" in page and "hooks.example.test" in page
    assert 'name="webhook_url"' not in page and "secret-path" not in page
    response = client.post(
        reverse("admin:batches_channel_change", args=[made.pk]),
        {"name": made.name, "enabled": ""},
    )
    assert response.status_code == 302
    made.refresh_from_db()
    assert not made.enabled
