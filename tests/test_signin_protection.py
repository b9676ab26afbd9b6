"""What guards the password sign-in: the throttle (django-axes) per account and per address,
its page and audit entries, the password switch, Django's password validators, sign-out by
POST only."""

from __future__ import annotations

import datetime as dt

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import password_validation
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from batches.models import Event

LOGIN = reverse("login")
pytestmark = pytest.mark.audit_sign_ins


@pytest.fixture(autouse=True)
def throttle(settings):
    """The defaults, whatever a developer's .env says."""
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = dt.timedelta(minutes=15)
    settings.SECURE_PROXY_SSL_HEADER = None
    settings.BATCHWEB_PASSWORD_SIGNIN = True


def attempt(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def lockout_end() -> dt.datetime:
    """The last failure's time, plus the lockout time (15 minutes)."""
    last = AccessAttempt.objects.order_by("-attempt_time").first().attempt_time
    return last + dt.timedelta(minutes=15)


def trail() -> list[tuple[str, str, str]]:
    return list(Event.objects.order_by("id").values_list("action", "username", "detail"))


# --- The throttle -------------------------------------------------------------------------------


def test_the_fifth_failure_locks_the_account_with_a_page_that_says_when(client, viewer):
    for _ in range(4):
        assert attempt(client, "vic", "wrong").status_code == 200

    response = attempt(client, "vic", "wrong")

    assert response.status_code == 429
    page = response.content.decode()
    until = lockout_end()
    assert "Too many failed sign-ins for this account or from your address." in page
    assert f"Try again after {until:%H:%M} UTC (in about 15 minutes)" in page
    assert 'name="password"' in page and 'value="vic"' in page  # the form, not a bare 403
    assert 14 * 60 <= int(response["Retry-After"]) <= 15 * 60


def test_the_right_password_is_refused_during_the_lockout_and_accepted_after_it(client, viewer):
    for _ in range(5):
        attempt(client, "vic", "wrong")

    refused = attempt(client, "vic", "pw-vic-123")

    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    # Fifteen minutes later the attempts have expired.
    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(minutes=16))
    assert attempt(client, "vic", "pw-vic-123").status_code == 302
    assert client.session["_auth_user_id"] == str(viewer.pk)


def test_the_account_is_locked_whatever_the_address(client, viewer):
    for number in range(5):
        attempt(client, "vic", "wrong", address=f"10.0.1.{number}")

    assert attempt(client, "vic", "pw-vic-123", address="10.0.2.1").status_code == 429


def test_the_address_is_locked_whatever_the_account_and_others_are_not(client, viewer, submitter):
    for name in ("a", "b", "c", "d", "e"):
        attempt(client, name, "wrong", address="10.0.3.1")

    assert attempt(client, "vic", "pw-vic-123", address="10.0.3.1").status_code == 429
    assert attempt(client, "sam", "pw-sam-123", address="10.0.3.2").status_code == 302


def test_failures_the_lockout_and_refusals_are_in_the_audit_trail(client, viewer):
    for _ in range(5):
        attempt(client, "vic", "wrong")
    attempt(client, "vic", "pw-vic-123")

    entries = trail()
    until = f"{lockout_end():%H:%M} UTC"
    assert entries[:4] == [("sign_in_failed", "vic", "from 10.0.0.1")] * 4
    # The fifth failure and the lockout it caused (in the order the signals arrive).
    assert sorted(entries[4:6]) == [
        ("sign_in_failed", "vic", "from 10.0.0.1"),
        (
            "sign_in_failed",
            "vic",
            f"from 10.0.0.1; locked out after 5 failed sign-ins until {until}",
        ),
    ]
    assert entries[6] == (
        "sign_in_failed",
        "vic",
        f"from 10.0.0.1; refused: too many failed sign-ins, locked until {until}",
    )
    assert len(entries) == 7
    assert set(Event.objects.values_list("outcome", flat=True)) == {"failed"}


def test_behind_a_proxy_the_address_is_the_one_the_proxy_saw(client, viewer, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    for number in range(5):
        # The client invents the first entries; the proxy appends the real address.
        client.post(
            LOGIN,
            {"username": f"u{number}", "password": "wrong"},
            REMOTE_ADDR="192.0.2.10",
            HTTP_X_FORWARDED_FOR=f"1.1.1.{number}, 10.9.9.9",
        )

    assert Event.objects.first().detail == "from 10.9.9.9"
    locked = client.post(
        LOGIN,
        {"username": "vic", "password": "pw-vic-123"},
        REMOTE_ADDR="192.0.2.10",
        HTTP_X_FORWARDED_FOR="10.9.9.9",
    )
    assert locked.status_code == 429


# --- The password switch ------------------------------------------------------------------------


def test_with_passwords_off_only_superusers_sign_in_with_one(client, viewer, admin_user, settings):
    settings.BATCHWEB_PASSWORD_SIGNIN = False

    refused = attempt(client, "vic", "pw-vic-123")

    assert refused.status_code == 200
    assert (
        "That username and password do not match an administrator's account. Only "
        "administrators sign in with a password here." in refused.content.decode()
    )
    assert "_auth_user_id" not in client.session
    assert attempt(client, "alice", "pw-alice-123").status_code == 302
    assert client.session["_auth_user_id"] == str(admin_user.pk)


def test_switching_passwords_off_ends_the_password_sessions_of_everyone_else(
    client, viewer, settings
):
    attempt(client, "vic", "pw-vic-123")
    assert client.get(reverse("batch-list")).status_code == 200

    settings.BATCHWEB_PASSWORD_SIGNIN = False

    assert client.get(reverse("batch-list")).status_code == 302


# --- Passwords and sign-out ---------------------------------------------------------------------


def test_django_password_validators_are_configured(settings, db):
    names = [v["NAME"].rsplit(".", 1)[1] for v in settings.AUTH_PASSWORD_VALIDATORS]
    assert names == [
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    ]
    user = User(username="victoria", email="victoria@example.com")
    for weak in ("short1", "password123", "3141592653589", "victoria1"):
        with pytest.raises(ValidationError):
            password_validation.validate_password(weak, user)
    password_validation.validate_password("correct horse battery staple", user)


def test_sign_out_is_post_only_and_audited(viewer_client, viewer):
    assert viewer_client.get(reverse("logout")).status_code == 405
    assert viewer_client.get(reverse("batch-list")).status_code == 200

    response = viewer_client.post(reverse("logout"))

    assert response["Location"] == LOGIN
    assert viewer_client.get(reverse("batch-list")).status_code == 302
    assert trail()[-1][:2] == ("sign_out", "vic")
