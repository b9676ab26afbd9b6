"""A person's email address: where it came from, and changing it with a link mailed to it.

The address on an account (`User.email`) is where notifications go. It is written here only,
and only by someone who vouches for it: an admin (the admin site), the company provider (a
sign-in whose claims say the address is verified), or the person after opening a link mailed
to the new address. An address typed on the profile page waits as `AccountEmail.pending` and
is used for nothing until its link is opened, neither for notifications nor for linking a
company sign-in (`email_trusted`, the rule services/signin/backends.py asks).

The link carries a token signed with the secret key (`TimestampSigner`, salted for this one
purpose), bound to the account's id and the address, and good for `LINK_MAX_AGE`; it works
for the address still waiting on that account only, so it is used once.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
from typing import Any, Literal

from django.conf import settings
from django.core import mail, signing
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from ..errors import Failure
from ..models import AccountEmail, Event

log = logging.getLogger(__name__)

SALT = "batchweb.addresses.email-link"
LINK_MAX_AGE = dt.timedelta(days=2)
# A second link to the same address is not mailed sooner than this: the profile form must not
# be a way to send many emails to someone else's mailbox.
RESEND_AFTER = dt.timedelta(minutes=1)
MAIL_TIMEOUT = 10.0

Source = AccountEmail.Source
Requested = Literal["unchanged", "removed", "sent", "not_sent", "too_soon"]


class AddressLinkRefused(Failure):
    """A link that does not verify anything; the message is for the person."""


# --- Where an address came from ----------------------------------------------------------------


def email_record(*, user: Any) -> AccountEmail | None:
    try:
        return user.account_email
    except AccountEmail.DoesNotExist:
        return None


def email_trusted(*, user: Any) -> bool:
    """True when the address on USER was set by an admin, by the provider, or verified with a
    mailed link, and has not been changed since. The only answer to "may this address link a
    company sign-in to USER"."""
    record = email_record(user=user)
    return record is not None and record.vouches_for(user)


def email_source(*, user: Any) -> str:
    """Where the address on USER came from, in words (for admins and the profile page)."""
    if not (user.email or "").strip():
        return "no address"
    record = email_record(user=user)
    if record is None or not record.vouches_for(user):
        return Source.UNVERIFIED.label
    return record.get_source_display()


def email_set(*, user: Any, address: str, source: str) -> AccountEmail:
    """Put ADDRESS on USER (empty: none) and record who vouched for it. Whatever was waiting for
    its link is dropped when the address is now the one it asked for."""
    address = address.strip()
    with transaction.atomic():
        if user.email != address:
            user.email = address
            user.save(update_fields=["email"])
        record = email_record(user=user) or AccountEmail(user=user)
        record.address, record.source, record.changed_at = address, source, timezone.now()
        if record.pending and record.pending.lower() == address.lower():
            record.pending, record.pending_since = "", None
        record.save()
    user.account_email = record
    return record


# --- Changing it on the profile ----------------------------------------------------------------


def email_link_token(*, user: Any, address: str) -> str:
    return signing.TimestampSigner(salt=SALT).sign_object({"u": user.pk, "a": address.lower()})


def email_link_url(*, user: Any, address: str) -> str:
    token = email_link_token(user=user, address=address)
    return f"{settings.BATCHWEB_BASE_URL}{reverse('profile-email-verify', args=[token])}"


def email_change_request(*, user: Any, address: str) -> Requested:
    """What the profile page's address field asks. The address on the account stays until the
    link mailed to ADDRESS is opened; an empty field removes the address at once (that sends
    nothing anywhere); the address already on the account cancels a change waiting."""
    address = address.strip()
    current = (user.email or "").strip()
    if not address:
        if not current and not _pending(user):
            return "unchanged"
        email_set(user=user, address="", source=Source.UNVERIFIED)
        email_change_cancel(user=user)
        Event.record(Event.Action.EMAIL_CHANGE, user=user, target="email address", detail="removed")
        return "removed"
    if address.lower() == current.lower():
        email_change_cancel(user=user)
        return "unchanged"
    return email_link_send(user=user, address=address)


def email_link_send(*, user: Any, address: str) -> Requested:
    """Keep ADDRESS as waiting for USER and mail it the link (also to verify the address
    already on the account, when it is not). Audited; the mail server's failure is said, and
    the address waits anyway (the person may ask again)."""
    address = address.strip()
    now = timezone.now()
    record = email_record(user=user) or AccountEmail(
        user=user, address=(user.email or "").strip(), source=Source.UNVERIFIED
    )
    same = record.pending.lower() == address.lower()
    if same and record.pending_since and now - record.pending_since < RESEND_AFTER:
        return "too_soon"
    record.pending, record.pending_since = address, now
    record.save()
    user.account_email = record
    Event.record(
        Event.Action.EMAIL_CHANGE, user=user, target="email address", detail=f"to {address}"
    )
    return "sent" if _mail_link(user=user, address=address) else "not_sent"


def email_change_cancel(*, user: Any) -> bool:
    """Forget the address waiting for its link; True if there was one."""
    record = email_record(user=user)
    if record is None or not record.pending:
        return False
    record.pending, record.pending_since = "", None
    record.save(update_fields=["pending", "pending_since"])
    return True


def email_link_check(*, user: Any, token: str) -> str:
    """The address the link TOKEN verifies for USER, or AddressLinkRefused saying why not.
    Writes nothing."""
    try:
        data = signing.TimestampSigner(salt=SALT).unsign_object(token, max_age=LINK_MAX_AGE)
    except signing.SignatureExpired:
        raise AddressLinkRefused(
            "That link has expired. Type the address on your profile again to get a new one."
        ) from None
    except signing.BadSignature:
        raise AddressLinkRefused(
            "That link is not one batchweb sent, or it was cut short. Open the whole link "
            "from the email."
        ) from None
    if not isinstance(data, dict) or data.get("u") != user.pk:
        raise AddressLinkRefused(
            "That link was sent for another batchweb account: sign in as that account to use "
            "it. Nothing was changed."
        )
    pending = _pending(user)
    if not pending or pending.lower() != str(data.get("a", "")):
        raise AddressLinkRefused(
            "That link is for an address your account no longer waits for (it was verified "
            "already, or you asked for another since). Nothing was changed."
        )
    return pending


def email_change_verify(*, user: Any, token: str) -> str:
    """Open the link: the address waiting becomes the account's, verified, and audited."""
    address = email_link_check(user=user, token=token)
    email_set(user=user, address=address, source=Source.VERIFIED)
    Event.record(
        Event.Action.EMAIL_VERIFY, user=user, target="email address", detail=f"now {address}"
    )
    return address


def _pending(user: Any) -> str:
    record = email_record(user=user)
    return record.pending if record is not None else ""


def _mail_link(*, user: Any, address: str) -> bool:
    hours = int(LINK_MAX_AGE.total_seconds() // 3600)
    body = "\n".join(
        [
            f"Someone signed in to batchweb as {user.get_username()} asked for its notifications "
            "to go to this address.",
            "",
            f"If that was you, open this link within {hours} hours to confirm it:",
            email_link_url(user=user, address=address),
            "",
            "If it was not you, ignore this email: nothing changes and nothing more is sent.",
        ]
    )
    message = mail.EmailMessage(
        subject="Confirm your email address for batchweb",
        body=body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers={"Auto-Submitted": "auto-generated"},
    )
    try:
        timeout = getattr(settings, "EMAIL_TIMEOUT", None) or MAIL_TIMEOUT
        message.connection = mail.get_connection(timeout=timeout)
        return bool(message.send())
    except (OSError, smtplib.SMTPException, ValueError) as error:
        # Never the link (it holds the token): which kind of failure, for the admins.
        log.warning("The address link could not be mailed: %s", type(error).__name__)
        return False
