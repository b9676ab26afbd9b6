"""Delivering the outbox. `notifications_deliver()`, called by the sync worker every few
seconds, claims due rows with a lease (the pattern of `batches_claim_due`), sends each outside
the claim's transaction (emails over one mail-server connection per round, a signed POST to a
channel's webhook), and marks it sent, or schedules the next attempt with a doubling wait, or
after `NOTIFY_MAX_ATTEMPTS` gives up: the row is "dead", shown to admins, and an audit entry
says so. A worker that dies mid-send leaves its rows leased; they are due again when the lease
runs out, so nothing is lost (a message may then go out twice, never zero times).

Webhook URLs and secrets are secrets: they are never logged or stored in an error message, only
a channel's name and host are.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.core import mail
from django.db import connection as db
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ... import keystore
from ...models import Batch, Channel, Event, Outbox
from .messages import ERROR_CHARS, one_line

logger = logging.getLogger(__name__)

# Seconds a webhook receiver or the mail server has to answer (EMAIL_TIMEOUT, when set, wins).
WEBHOOK_TIMEOUT = 10.0
EMAIL_TIMEOUT = 10.0

# Headers of the JSON body's signature (see docs/notifications.md).
SIGNATURE_HEADER = "X-Batchweb-Signature"
TIMESTAMP_HEADER = "X-Batchweb-Timestamp"
DELIVERY_HEADER = "X-Batchweb-Delivery"

# The clock of a delivery round's time budget (tests replace it).
_monotonic = time.monotonic


def webhook_signature(*, secret: str, body: bytes) -> str:
    """The `X-Batchweb-Signature` header: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- Delivering -------------------------------------------------------------------------------


@dataclass
class DeliveryResult:
    """What one `notifications_deliver` call did; `str()` is its log line."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    released: int = 0  # claimed but given back unsent (time ran out)

    def __str__(self) -> str:
        text = (
            f"{self.sent} sent, {self.retrying} to retry, {self.dead} given up "
            f"of {self.claimed} claimed"
        )
        return text + (f", {self.released} given back" if self.released else "")


class DeliveryError(Exception):
    """A notification could not be delivered; the message is safe to store and show (it never
    holds a webhook URL or secret). `permanent`: trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def outbox_claim_due(*, now: dt.datetime, until: dt.datetime, limit: int) -> list[Outbox]:
    """Claim up to `limit` pending notifications due at `now` whose lease is free (never taken,
    or run out: its worker died), by setting their lease to `until`, oldest due first."""
    free = Q(lease_until__isnull=True) | Q(lease_until__lte=now)
    due = (
        Outbox.objects.filter(state=Outbox.State.PENDING, next_attempt_at__lte=now)
        .filter(free)
        .order_by("next_attempt_at", "id")
    )
    if db.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
            if ids:
                Outbox.objects.filter(pk__in=ids).update(lease_until=until)
    else:
        # No row locks: a row is ours only if nobody moved its lease since we read it.
        ids = [
            pk
            for pk, lease in due.values_list("pk", "lease_until")[:limit]
            if Outbox.objects.filter(pk=pk, state=Outbox.State.PENDING, lease_until=lease).update(
                lease_until=until
            )
        ]
    found = Outbox.objects.in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


def backoff_seconds(attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: doubling from the first to the last."""
    low, high = settings.NOTIFY_BACKOFF_MIN_SECONDS, settings.NOTIFY_BACKOFF_MAX_SECONDS
    return min(high, low * 2 ** max(0, min(attempts - 1, 30)))


def notifications_deliver(
    *,
    now: dt.datetime | None = None,
    limit: int = 50,
    stop: Callable[[], bool] | None = None,
) -> DeliveryResult:
    """Send the notifications that are due. Each is claimed with a lease first, so two workers
    never send the same one; the sending happens outside any transaction. Receivers that fail
    are tried again later; database errors are raised for the caller. `now` pins the clock
    (tests); `stop` is asked between sends, and what is left is given back."""
    clock: Callable[[], dt.datetime] = (lambda: now) if now is not None else timezone.now
    lease = settings.NOTIFY_LEASE_SECONDS
    until = clock() + dt.timedelta(seconds=lease)
    rows = outbox_claim_due(now=clock(), until=until, limit=limit)
    result = DeliveryResult(claimed=len(rows))
    if not rows:
        return result
    started = _monotonic()
    mailer = _Mailer()
    try:
        while rows:
            # Past half the lease another worker may soon claim these: give the rest back.
            if _monotonic() - started > lease / 2 or (stop and stop()):
                break
            row = rows.pop(0)
            try:
                _send(row, mailer=mailer, when=clock())
            except DeliveryError as error:
                _failed(row, error=error, until=until, now=clock(), result=result)
            except Exception as error:
                # A bug, or a failure no one foresaw: counted like a failed attempt, so the row
                # is retried and finally dead-lettered rather than retried for ever.
                logger.exception("notification %s: unexpected error", row.pk)
                failure = DeliveryError(one_line(f"{type(error).__name__}: {error}", ERROR_CHARS))
                _failed(row, error=failure, until=until, now=clock(), result=result)
            else:
                _sent(row, until=until, now=clock(), result=result)
    finally:
        mailer.close()
        if rows:
            result.released = Outbox.objects.filter(
                pk__in=[r.pk for r in rows], lease_until=until
            ).update(lease_until=None)
    return result


def _sent(row: Outbox, *, until: dt.datetime, now: dt.datetime, result: DeliveryResult) -> None:
    Outbox.objects.filter(pk=row.pk, lease_until=until).update(
        state=Outbox.State.SENT,
        sent_at=now,
        attempts=F("attempts") + 1,
        lease_until=None,
        last_error="",
    )
    result.sent += 1
    logger.info("notification %s sent (%s to %s)", row.pk, row.channel, _describe(row))


def _failed(
    row: Outbox,
    *,
    error: DeliveryError,
    until: dt.datetime,
    now: dt.datetime,
    result: DeliveryResult,
) -> None:
    attempts = row.attempts + 1
    message = str(error)[:2000]
    mine = Outbox.objects.filter(pk=row.pk, lease_until=until)
    if error.permanent or attempts >= settings.NOTIFY_MAX_ATTEMPTS:
        if mine.update(
            state=Outbox.State.DEAD, attempts=attempts, lease_until=None, last_error=message
        ):
            result.dead += 1
            logger.warning(
                "notification %s to %s given up after %d attempts: %s",
                row.pk,
                _describe(row),
                attempts,
                message,
            )
            batch = Batch.objects.select_related("connection").filter(pk=row.batch_id).first()
            Event.record(
                Event.Action.NOTIFY_FAILED,
                batch=batch,
                target=f"{row.get_channel_display()} to {_describe(row)}",
                detail=f"{row.subject}: gave up after {attempts} attempts. {message}",
            )
        return
    wait = backoff_seconds(attempts)
    if mine.update(
        attempts=attempts,
        lease_until=None,
        last_error=message,
        next_attempt_at=now + dt.timedelta(seconds=wait),
    ):
        result.retrying += 1
        logger.warning(
            "notification %s to %s failed (attempt %d), next try in %.0f s: %s",
            row.pk,
            _describe(row),
            attempts,
            wait,
            message,
        )


def _describe(row: Outbox) -> str:
    """Who a notification is for, safe to log and show: an address, or a channel's name."""
    if row.channel == Outbox.Channel.EMAIL:
        return row.recipient
    channel = Channel.objects.filter(pk=_channel_pk(row)).first()
    return f"channel “{channel.name}” ({channel.url_host})" if channel else "a deleted channel"


def _channel_pk(row: Outbox) -> int | None:
    return int(row.recipient) if row.recipient.isdigit() else None


# --- Sending one ------------------------------------------------------------------------------


def _send(row: Outbox, *, mailer: _Mailer, when: dt.datetime) -> None:
    if row.channel == Outbox.Channel.EMAIL:
        message = mail.EmailMessage(
            subject=one_line(row.subject, 255),
            body=row.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[row.recipient],
            headers={"Auto-Submitted": "auto-generated"},
        )
        mailer.send(message)
        return
    channel = Channel.objects.filter(pk=_channel_pk(row)).first()
    if channel is None:
        raise DeliveryError("The channel was deleted.", permanent=True)
    if not channel.enabled:
        raise DeliveryError(f"The channel “{channel.name}” is disabled.", permanent=True)
    _post(row, channel=channel, when=when)


def _post(row: Outbox, *, channel: Channel, when: dt.datetime) -> None:
    try:
        url, secret = channel.url(), channel.secret()
    except keystore.KeystoreError as error:
        raise DeliveryError(str(error)) from None
    if not url:
        raise DeliveryError(
            f"The channel “{channel.name}” has no URL (BATCHWEB_NOTIFY_WEBHOOK_URL is empty)."
            if channel.from_settings
            else f"The channel “{channel.name}” has no URL.",
            permanent=True,
        )
    payload = json.loads(row.body)
    if "type" in payload:  # the JSON body: say which delivery this is, and when it was sent
        payload = {"id": f"ntf_{row.pk}", **payload, "sent_at": when.isoformat()}
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "batchweb",
        DELIVERY_HEADER: f"ntf_{row.pk}",
        TIMESTAMP_HEADER: str(int(when.timestamp())),
    }
    if secret:
        headers[SIGNATURE_HEADER] = webhook_signature(secret=secret, body=body)
    host = channel.url_host or "the receiver"
    try:
        response = requests.post(
            url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT, allow_redirects=False
        )
    except requests.RequestException as error:
        # The exception's text holds the URL (a secret): say what happened in our own words.
        raise DeliveryError(f"{_transport_failure(error)} ({host}).") from None
    if not 200 <= response.status_code < 300:
        said = one_line(response.text, 200).replace(url, "[url]")
        if secret:
            said = said.replace(secret, "[secret]")
        raise DeliveryError(
            f"{host} answered HTTP {response.status_code}" + (f": {said}" if said else ".")
        )


def _transport_failure(error: requests.RequestException) -> str:
    if isinstance(error, requests.ConnectTimeout):
        return "Timed out connecting to the receiver"
    if isinstance(error, requests.Timeout):
        return f"The receiver did not answer within {WEBHOOK_TIMEOUT:.0f} s"
    if isinstance(error, requests.exceptions.SSLError):
        return "The receiver's TLS certificate was refused"
    if isinstance(error, requests.ConnectionError):
        return "Could not connect to the receiver"
    return f"The request to the receiver failed ({type(error).__name__})"


class _Mailer:
    """One connection to the mail server per delivery round, opened at the first email. When
    the server cannot be reached, the other emails of the round fail at once instead of each
    waiting for its own timeout."""

    def __init__(self) -> None:
        self.connection: Any = None
        self.broken = ""

    def send(self, message: mail.EmailMessage) -> None:
        if self.broken:
            raise DeliveryError(self.broken)
        if self.connection is None:
            self.connection = mail.get_connection(
                timeout=getattr(settings, "EMAIL_TIMEOUT", None) or EMAIL_TIMEOUT
            )
            try:
                self.connection.open()
            except (OSError, smtplib.SMTPException) as error:
                self.connection = None
                self.broken = f"Could not reach the mail server: {_mail_error(error)}"
                raise DeliveryError(self.broken) from None
        message.connection = self.connection
        try:
            sent = message.send()
        except (OSError, smtplib.SMTPException, ValueError) as error:
            # The session may be unusable now: the next email opens a new one.
            self.close()
            raise DeliveryError(f"The mail server refused it: {_mail_error(error)}") from None
        if not sent:
            raise DeliveryError("The mail server accepted no recipient.")

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.connection.close()
            self.connection = None


def _mail_error(error: BaseException) -> str:
    return one_line(f"{type(error).__name__}: {error}", ERROR_CHARS)
