"""The profile page's address (issue 19, item 1): an address typed there waits for the link
emailed to it, and counts (for notifications, for linking a company sign-in) only once that
link is opened by the same person. The switches are in test_notifications_views.py."""

from __future__ import annotations

import html
import re
import smtplib
import time

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.test import Client
from django.urls import reverse

from batches.models import AccountEmail, Event, Outbox, Watch
from batches.services import addresses
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db

PROFILE = reverse("profile")
NEW = "victor@example.org"
LINK = re.compile(r"https?://\S+/profile/email/(\S+)/")


def said(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


def page_of(response) -> str:
    return html.unescape(response.content.decode())


def ask_for(client: Client, address: str = NEW):
    switches = {"my_batches": "on", "watched": "on", "at_risk": "on"}
    return client.post(PROFILE, {"email": address, **switches}, follow=True)


def token_mailed(mailoutbox, address: str = NEW) -> str:
    (message,) = [m for m in mailoutbox if m.to == [address]]
    return LINK.search(message.body).group(1)


def link(token: str) -> str:
    return reverse("profile-email-verify", args=[token])


def written() -> tuple:
    """Everything opening a link could write: the addresses, their records, the trail."""
    return (
        sorted(User.objects.values_list("username", "email")),
        sorted(AccountEmail.objects.values_list("user_id", "address", "source", "pending")),
        Event.objects.count(),
    )


@pytest.fixture(autouse=True)
def base_url(settings):
    settings.BATCHWEB_BASE_URL = "https://batchweb.example.test"


# --- Asking for a new address -----------------------------------------------------------------


def test_a_typed_address_waits_for_its_link_and_the_old_one_stays(
    viewer_client, viewer, mailoutbox
):
    response = ask_for(viewer_client)

    assert "We emailed a link to victor@example.org" in said(response)
    assert "Until then they go to vic@example.com." in said(response)
    viewer.refresh_from_db()
    assert viewer.email == "vic@example.com"
    assert not addresses.email_trusted(user=viewer)
    record = AccountEmail.objects.get(user=viewer)
    assert (record.pending, record.source) == (NEW, "unverified")
    (message,) = mailoutbox
    assert message.to == [NEW] and message.subject == "Confirm your email address for batchweb"
    assert f"https://batchweb.example.test{link(token_mailed(mailoutbox))}" in message.body
    event = Event.objects.get()
    assert (event.action, event.user, event.detail) == ("email_change", viewer, f"to {NEW}")
    page = page_of(viewer_client.get(PROFILE))
    assert 'value="vic@example.com"' in page
    assert f"Waiting for you to open the link emailed to <strong>{NEW}</strong>" in page


def test_asking_again_at_once_mails_nothing_more(viewer_client, mailoutbox):
    ask_for(viewer_client)
    response = ask_for(viewer_client)

    assert "less than a minute ago" in said(response)
    assert len(mailoutbox) == 1


def test_a_mail_server_that_fails_is_said_and_the_address_is_unchanged(
    viewer_client, viewer, monkeypatch, caplog
):
    def refuse(self, *args, **kwargs):
        raise smtplib.SMTPServerDisconnected("the secret link would be in here")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", refuse)

    response = ask_for(viewer_client)

    assert "could not be emailed" in said(response)
    assert "secret link" not in page_of(response) and "secret link" not in caplog.text
    viewer.refresh_from_db()
    assert viewer.email == "vic@example.com"


def test_removing_the_address_applies_at_once(viewer_client, viewer, mailoutbox):
    response = ask_for(viewer_client, "")

    assert "nothing is emailed to you" in said(response)
    viewer.refresh_from_db()
    assert viewer.email == "" and not mailoutbox


def test_the_change_can_be_cancelled(viewer_client, viewer, mailoutbox):
    ask_for(viewer_client)
    token = token_mailed(mailoutbox)

    viewer_client.post(PROFILE, {"action": "cancel-email"})

    assert AccountEmail.objects.get(user=viewer).pending == ""
    viewer_client.post(link(token))
    viewer.refresh_from_db()
    assert viewer.email == "vic@example.com"  # the link of a cancelled change does nothing


def test_an_unverified_address_already_there_can_be_verified(viewer_client, viewer, mailoutbox):
    assert "Email me a link to verify it" in page_of(viewer_client.get(PROFILE))

    viewer_client.post(PROFILE, {"action": "verify-email"})
    viewer_client.post(link(token_mailed(mailoutbox, "vic@example.com")))

    viewer.refresh_from_db()
    assert addresses.email_source(user=viewer) == "verified with a mailed link"
    assert "Email me a link" not in page_of(viewer_client.get(PROFILE))


# --- The link ---------------------------------------------------------------------------------


def test_the_link_asks_to_confirm_and_then_the_address_is_the_accounts(
    viewer_client, viewer, mailoutbox
):
    ask_for(viewer_client)
    token = token_mailed(mailoutbox)
    before = written()

    shown = viewer_client.get(link(token))  # what a mail scanner's fetch would do

    assert shown.status_code == 200 and f"Yes, use {NEW}" in page_of(shown)
    assert written() == before
    response = viewer_client.post(link(token), follow=True)

    assert f"Your email address is now {NEW}" in said(response)
    viewer.refresh_from_db()
    assert viewer.email == NEW
    assert addresses.email_trusted(user=viewer)
    assert AccountEmail.objects.get(user=viewer).pending == ""
    event = Event.objects.order_by("id").last()
    assert (event.action, event.user, event.detail) == ("email_verify", viewer, f"now {NEW}")


def test_a_link_works_once(viewer_client, viewer, mailoutbox):
    ask_for(viewer_client)
    token = token_mailed(mailoutbox)
    viewer_client.post(link(token))
    ask_for(viewer_client, "vic@example.com")  # and back, verified by nobody
    before = written()

    response = viewer_client.post(link(token), follow=True)

    assert "no longer waits for" in said(response)
    assert written() == before


def test_an_expired_link_changes_nothing(viewer_client, viewer, mailoutbox, monkeypatch):
    real = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real() - 3 * 24 * 3600)
    ask_for(viewer_client)
    monkeypatch.setattr(signing.time, "time", real)
    token = token_mailed(mailoutbox)
    before = written()

    for method in (viewer_client.get, viewer_client.post):
        response = method(link(token), follow=True)
        assert "That link has expired" in said(response)
    assert written() == before


def test_a_tampered_link_changes_nothing(viewer_client, viewer, mailoutbox):
    ask_for(viewer_client)
    token = token_mailed(mailoutbox)
    _, stamp, signature = token.split(":")
    forged = signing.b64_encode(b'{"u":%d,"a":"evil@example.net"}' % viewer.pk).decode()
    before = written()

    for bad in (f"{forged}:{stamp}:{signature}", token[:-2], "bm9uc2Vuc2U:1vAbCd:xyz"):
        response = viewer_client.post(link(bad), follow=True)
        assert "not one batchweb sent" in said(response)
    assert written() == before


def test_a_link_for_someone_else_changes_nothing(viewer_client, viewer, submitter, mailoutbox):
    ask_for(viewer_client)
    token = token_mailed(mailoutbox)
    other = Client()
    other.force_login(submitter)
    before = written()

    for method in (other.get, other.post):
        response = method(link(token), follow=True)
        assert "sent for another batchweb account" in said(response)
    assert written() == before


def test_a_link_opened_without_signing_in_asks_to_sign_in_and_changes_nothing(
    viewer_client, mailoutbox
):
    ask_for(viewer_client)
    token = token_mailed(mailoutbox)
    stranger = Client()
    before = written()

    for method in (stranger.get, stranger.post):
        response = method(link(token))
        assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert written() == before


# --- Where notifications go -------------------------------------------------------------------


def test_notifications_never_go_to_an_address_not_verified_yet(viewer_client, viewer, mailoutbox):
    batch = batch_upsert(payload=make_batch(id="batch_p1", status="in_progress")).batch
    Watch.objects.create(user=viewer, batch=batch)
    ask_for(viewer_client)

    batch_upsert(payload=make_batch(id="batch_p1", status="completed"))

    recipients = list(Outbox.objects.filter(channel="email").values_list("recipient", flat=True))
    assert recipients == ["vic@example.com"]
    viewer_client.post(link(token_mailed(mailoutbox)))
    later = batch_upsert(payload=make_batch(id="batch_p2", status="in_progress")).batch
    Watch.objects.create(user=viewer, batch=later)
    batch_upsert(payload=make_batch(id="batch_p2", status="completed"))
    assert Outbox.objects.get(batch=later, channel="email").recipient == NEW


# --- The admin site ---------------------------------------------------------------------------


def test_an_address_an_admin_sets_is_trusted_and_the_source_is_shown(client, admin_user, viewer):
    client.force_login(admin_user)
    url = reverse("admin:auth_user_change", args=[viewer.pk])
    form = client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "password"}
    data.update(email="victor@corp.example", groups=[g.pk for g in viewer.groups.all()])
    data.update({"date_joined_0": "2025-01-01", "date_joined_1": "10:00:00"})

    response = client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    viewer.refresh_from_db()
    assert viewer.email == "victor@corp.example" and addresses.email_trusted(user=viewer)
    assert "set by an admin" in page_of(client.get(url))


def test_an_admin_can_vouch_for_addresses_already_there(client, admin_user, viewer, submitter):
    client.force_login(admin_user)

    client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "vouch_for_addresses", "_selected_action": [viewer.pk]},
    )

    assert addresses.email_trusted(user=User.objects.get(pk=viewer.pk))
    assert not addresses.email_trusted(user=submitter)
    event = Event.objects.get(action="admin_change")
    assert (event.target, event.detail) == ("user vic", "vouched for the address")


def test_an_admin_sees_company_links_and_may_only_remove_one(client, admin_user, viewer):
    from batches.models import CompanyIdentity

    link = CompanyIdentity.objects.create(
        user=viewer, issuer="https://sso.example.test", subject="sub-vic"
    )
    client.force_login(admin_user)

    listing = page_of(client.get(reverse("admin:batches_companyidentity_changelist")))
    assert "sub-vic" in listing and "vic" in listing
    assert client.get(reverse("admin:batches_companyidentity_add")).status_code == 403
    response = client.post(
        reverse("admin:batches_companyidentity_delete", args=[link.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not CompanyIdentity.objects.exists()
    event = Event.objects.get(action="admin_delete")
    assert event.target == "company identity sub-vic at https://sso.example.test"
