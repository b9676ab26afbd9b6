"""Personal API tokens: made on the profile page and shown once, stored as a prefix and a hash,
refused when malformed, unknown, expired or revoked, revocable by their owner and by admins,
every creation and revocation in the audit trail."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from api.models import ApiToken, Scope
from api.services.tokens import (
    TokenRefused,
    token_authenticate,
    token_create,
    token_revoke,
)
from batches.models import Event

pytestmark = pytest.mark.django_db

SHAPE = re.compile(r"^bw_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")


def bearer(plain: str) -> str:
    return f"Bearer {plain}"


def test_a_new_token_is_returned_once_and_only_its_prefix_and_hash_are_stored(submitter):
    made = token_create(user=submitter, name="  nightly   eval ", scope="submit", days=30)

    assert SHAPE.match(made.plain)
    secret = made.plain.split("_", 2)[2]
    row = ApiToken.objects.values().get()
    assert all(secret not in str(value) for value in row.values())  # the secret is not stored
    assert made.plain not in str(row)
    assert row["prefix"] == made.plain[3:11]
    assert len(row["secret_sha256"]) == 64
    assert row["name"] == "nightly eval" and row["scope"] == "submit"
    assert row["expires_at"] - row["created_at"] == dt.timedelta(days=30)
    event = Event.objects.get()
    assert (event.action, event.user, event.target) == (
        Event.Action.TOKEN_CREATE,
        submitter,
        f"API token nightly eval (bw_{row['prefix']}…)",
    )
    assert made.plain not in event.detail and secret not in event.detail


def test_two_tokens_never_share_a_secret_or_prefix(submitter):
    first = token_create(user=submitter, name="a", scope="read", days=7).plain
    second = token_create(user=submitter, name="b", scope="read", days=7).plain

    assert first != second and first[:11] != second[:11]


def test_a_valid_token_authenticates_its_owner_and_notes_when_it_was_used(submitter):
    made = token_create(user=submitter, name="ci", scope="read", days=7)
    assert made.token.last_used_at is None

    token = token_authenticate(bearer(made.plain))

    assert token.user == submitter and token.scope == Scope.READ
    used = ApiToken.objects.get().last_used_at
    assert used is not None
    token_authenticate(bearer(made.plain), now=used + dt.timedelta(seconds=10))
    assert ApiToken.objects.get().last_used_at == used  # at most one write a minute
    later = used + dt.timedelta(minutes=5)
    token_authenticate(bearer(made.plain), now=later)
    assert ApiToken.objects.get().last_used_at == later


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer sk-proj-abc123", "invalid_api_key"),
        ("Basic YWxpY2U6cHc=", "invalid_api_key"),
        ("Bearer bw_1234", "invalid_api_key"),
        ("Bearer bw_zzzzzzzz_" + "a" * 43, "invalid_api_key"),
        ("Bearer bw_0123abcd_" + "a" * 42 + "!", "invalid_api_key"),
    ],
)
def test_a_missing_or_malformed_token_is_refused(header, code):
    with pytest.raises(TokenRefused) as refused:
        token_authenticate(header)

    assert refused.value.code == code and refused.value.token is None


def test_a_token_with_a_known_prefix_but_another_secret_is_refused(submitter):
    plain = token_create(user=submitter, name="ci", scope="read", days=7).plain
    forged = plain[:12] + ("A" if plain[12] != "A" else "B") + plain[13:]

    with pytest.raises(TokenRefused) as refused:
        token_authenticate(bearer(forged))

    assert refused.value.code == "invalid_api_key" and refused.value.token is None


def test_an_expired_token_is_refused_saying_when_it_expired(submitter):
    made = token_create(user=submitter, name="ci", scope="read", days=7)

    with pytest.raises(TokenRefused) as refused:
        token_authenticate(bearer(made.plain), now=timezone.now() + dt.timedelta(days=8))

    assert refused.value.code == "expired_api_key"
    assert refused.value.token == made.token
    assert "expired on" in refused.value.message and made.plain not in refused.value.message


def test_a_revoked_token_is_refused(submitter):
    made = token_create(user=submitter, name="ci", scope="read", days=7)
    assert token_revoke(token=made.token, by=submitter)

    with pytest.raises(TokenRefused) as refused:
        token_authenticate(bearer(made.plain))

    assert refused.value.code == "revoked_api_key"
    assert not token_revoke(token=made.token, by=submitter)  # once only
    assert Event.objects.filter(action=Event.Action.TOKEN_REVOKE).count() == 1


def test_the_token_of_a_disabled_account_is_refused(submitter):
    plain = token_create(user=submitter, name="ci", scope="read", days=7).plain
    User.objects.filter(pk=submitter.pk).update(is_active=False)

    with pytest.raises(TokenRefused) as refused:
        token_authenticate(bearer(plain))

    assert refused.value.code == "account_disabled"


# --- The profile page ------------------------------------------------------------------------


def test_the_profile_page_makes_a_token_and_shows_it_once(submitter_client, submitter):
    response = submitter_client.post(
        "/profile/tokens/", {"name": "nightly eval", "scope": "submit", "days": "90"}
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    [plain] = set(re.findall(r"bw_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", response.content.decode()))
    token = token_authenticate(bearer(plain))
    assert (token.user, token.name, token.scope) == (submitter, "nightly eval", "submit")
    profile = submitter_client.get("/profile/").content.decode()
    assert "nightly eval" in profile and token.display_prefix in profile
    assert plain not in profile and plain[11:] not in profile


def test_a_viewer_is_not_offered_a_submit_token(viewer_client, viewer):
    page = viewer_client.get("/profile/").content.decode()

    response = viewer_client.post("/profile/tokens/", {"name": "x", "scope": "submit", "days": "7"})

    assert 'value="submit"' not in page and 'value="read"' in page
    assert response.status_code == 302 and not ApiToken.objects.exists()


def test_someone_without_a_role_cannot_make_a_token(client):
    client.force_login(User.objects.create_user("nobody", password="pw-nobody-1"))

    response = client.post("/profile/tokens/", {"name": "x", "scope": "read", "days": "7"})

    assert response.status_code == 403 and not ApiToken.objects.exists()


def test_an_owner_revokes_their_token_from_the_profile_page(submitter_client, submitter):
    made = token_create(user=submitter, name="ci", scope="read", days=7)

    response = submitter_client.post(f"/profile/tokens/{made.token.pk}/revoke/")

    assert response.status_code == 302 and response.url == "/profile/"
    assert ApiToken.objects.get().state() == "revoked"
    event = Event.objects.filter(action=Event.Action.TOKEN_REVOKE).get()
    assert event.user == submitter and event.target.startswith("API token ci")
    assert "revoked" in submitter_client.get("/profile/").content.decode()


def test_nobody_revokes_another_person_s_token_from_their_profile(client, submitter, viewer):
    made = token_create(user=submitter, name="ci", scope="read", days=7)
    client.force_login(viewer)

    response = client.post(f"/profile/tokens/{made.token.pk}/revoke/")

    assert response.status_code == 404
    assert ApiToken.objects.get().state() == "active"


def test_an_admin_revokes_anyone_s_token_in_the_admin_site(client, admin_user, submitter):
    made = token_create(user=submitter, name="ci", scope="submit", days=7)
    client.force_login(admin_user)

    listing = client.get("/admin/api/apitoken/")
    response = client.post(
        "/admin/api/apitoken/",
        {"action": "revoke", "_selected_action": [made.token.pk]},
    )

    assert listing.status_code == 200 and made.token.display_prefix in listing.content.decode()
    assert response.status_code == 302
    token = ApiToken.objects.get()
    assert token.state() == "revoked" and token.revoked_by == admin_user
    event = Event.objects.filter(action=Event.Action.TOKEN_REVOKE).get()
    assert event.user == admin_user and event.target.endswith("of sam")
    assert client.get("/admin/api/apitoken/add/").status_code == 403  # made by owners only
