"""Receiving OpenAI's webhooks: a batch ended, so fetch it now rather than at the next poll.

OpenAI signs each delivery the Standard Webhooks way (see providers-webhooks-prices.md):

- headers `webhook-id` (the same on every retry of one delivery: the idempotency key),
  `webhook-timestamp` (unix seconds) and `webhook-signature`, a space-separated list of
  `v1,<base64>` entries (several while a secret is being rotated);
- the signature is HMAC-SHA256 over the exact bytes `{webhook-id}.{webhook-timestamp}.{body}`,
  keyed with the base64-decoded part of the secret after `whsec_`.

`webhook_verify()` checks exactly that and raises one of the `WebhookError` family, each with a
short reason that is safe to send back and to store (never the secret or a signature).
`webhook_receive()` verifies, parses, dispatches on the event's `type` string and records what
it may:

- a delivery refused before its signature is verified (the connection takes no webhooks, a
  header is missing, no signature matches, the timestamp is off, the body is too large) may
  come from anyone who knows the URL: it is only counted, in the connection's one
  `WebhookRefusals` row (`webhook_refuse`), with no row of its own and no audit entry;
- a delivery signed with the connection's secret comes from OpenAI: it is kept as a
  `WebhookDelivery` row and an audit `Event`, accepted or refused, once per `webhook-id`. A
  redelivery of an id seen before (OpenAI retries when its 200 was lost) is answered as the
  first one was and writes nothing.

Nothing here calls upstream: the body is thin (an event id and a batch id), so an accepted
delivery only makes the cached batch due (`next_refresh_at = now`) and the worker's next pass,
seconds later, retrieves it. A batch that is not cached yet is found by the worker's list walk,
which runs every pass; one cached as finished already has its final state. Polling stays the
fallback for deliveries that never arrive.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from ..models import (
    Batch,
    Connection,
    ConnectionKeyError,
    Event,
    WebhookDelivery,
    WebhookRefusals,
)

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024
# OpenAI's ids are ~35 characters; the columns hold 128.
MAX_ID_LENGTH = 128
# Three or four `v1,<44 characters>` entries during a rotation; anything this long is junk.
MAX_SIGNATURE_HEADER = 4096

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

# The events batchweb subscribes to. Dispatch is on this string: the SDK's `unwrap()` does not
# check it, and an event type added upstream must be refused, not half-handled. Each of these
# says a batch ended, and each is handled the same way: fetch that batch soon.
BATCH_EVENTS = frozenset({"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"})

_ID_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")  # printable ASCII, no spaces
_TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")


# --- Errors ----------------------------------------------------------------------------------


class WebhookError(Exception):
    """A delivery refused. `reason` is short, and safe to answer with and to store."""

    reason = "refused"

    def __init__(self, reason: str | None = None) -> None:
        if reason:
            self.reason = reason
        super().__init__(self.reason)


class WebhookNotConfigured(WebhookError):
    """No usable signing secret for this connection, or the connection is disabled."""

    reason = "no webhook secret is set for this connection"


class WebhookBodyTooLarge(WebhookError):
    reason = f"the body is larger than {MAX_BODY_BYTES} bytes"


class WebhookHeaderMissing(WebhookError):
    reason = "a webhook header is missing"


class WebhookHeaderInvalid(WebhookError):
    reason = "a webhook header is malformed"


class WebhookTimestampOutOfRange(WebhookError):
    """Signed more than `TOLERANCE_SECONDS` ago or ahead: perhaps a captured delivery replayed."""

    reason = "the timestamp is too far from now"


class WebhookSignatureMismatch(WebhookError):
    reason = "no signature matches"


class WebhookPayloadInvalid(WebhookError):
    reason = "the body is not a webhook event"


class WebhookEventUnsupported(WebhookError):
    reason = "this event type is not handled"


class WebhookOtherConnection(WebhookError):
    reason = "the batch belongs to another connection"


# --- Verifying -------------------------------------------------------------------------------


def webhook_secret_problem(secret: str) -> str:
    """Why `secret` cannot verify anything ("" when it can): for forms and the service."""
    try:
        _signing_key(secret)
    except WebhookNotConfigured as error:
        return error.reason
    return ""


def _signing_key(secret: str) -> bytes:
    if not secret:
        raise WebhookNotConfigured()
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookNotConfigured("the webhook secret does not start with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookNotConfigured("the webhook secret is not base64 after whsec_") from None
    if not key:
        raise WebhookNotConfigured("the webhook secret is empty after whsec_")
    return key


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The three webhook headers, looked up without regard to case."""
    wanted = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
    return {
        name.lower(): value
        for name, value in headers.items()
        if isinstance(name, str) and name.lower() in wanted and isinstance(value, str)
    }


def webhook_verify(
    *,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime | None = None,
) -> str:
    """Check a delivery's Standard Webhooks signature and return its `webhook-id`.

    Raises `WebhookNotConfigured` (no usable secret), `WebhookHeaderMissing`,
    `WebhookHeaderInvalid`, `WebhookTimestampOutOfRange` (more than 300 s before or after
    `now`) or `WebhookSignatureMismatch` (no `v1` entry matches; other versions are ignored).
    """
    key = _signing_key(secret)
    found = _headers(headers)
    missing = [
        name for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if not found.get(name)
    ]
    if missing:
        raise WebhookHeaderMissing(f"missing header {', '.join(missing)}")
    webhook_id = found[ID_HEADER]
    timestamp = found[TIMESTAMP_HEADER]
    signature_header = found[SIGNATURE_HEADER]
    if not _ID_PATTERN.fullmatch(webhook_id):
        raise WebhookHeaderInvalid(f"{ID_HEADER} is not a short printable id")
    if not _TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise WebhookHeaderInvalid(f"{TIMESTAMP_HEADER} is not unix seconds")
    if len(signature_header) > MAX_SIGNATURE_HEADER:
        raise WebhookHeaderInvalid(f"{SIGNATURE_HEADER} is too long")

    now_seconds = int((now or timezone.now()).timestamp())
    if now_seconds - int(timestamp) > TOLERANCE_SECONDS:
        raise WebhookTimestampOutOfRange("the timestamp is more than 5 minutes old")
    if int(timestamp) - now_seconds > TOLERANCE_SECONDS:
        raise WebhookTimestampOutOfRange("the timestamp is more than 5 minutes ahead")

    candidates = [entry[3:] for entry in signature_header.split() if entry.startswith("v1,")]
    if not candidates:
        raise WebhookSignatureMismatch("no v1 signature in webhook-signature")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    matched = False
    for candidate in candidates:  # every one compared, in constant time
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    if not matched:
        raise WebhookSignatureMismatch()
    return webhook_id


# --- Parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEvent:
    """The parts of an event batchweb reads: `{"id", "type", "data": {"id"}}`."""

    type: str
    batch_openai_id: str
    event_id: str = ""


def webhook_parse(body: bytes) -> WebhookEvent:
    """Read a verified body. Raises `WebhookPayloadInvalid` for anything but an event object
    with a string `type` and a batch id in `data.id` (the type itself is checked by the
    caller, so that a refused type is still recorded by name)."""
    try:
        event = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise WebhookPayloadInvalid("the body is not UTF-8") from None
    except (ValueError, RecursionError):
        raise WebhookPayloadInvalid("the body is not JSON") from None
    if not isinstance(event, dict):
        raise WebhookPayloadInvalid("the body is not a JSON object")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise WebhookPayloadInvalid("the event has no type")
    data = event.get("data")
    batch_id = data.get("id") if isinstance(data, dict) else None
    event_id = event.get("id")
    return WebhookEvent(
        type=kind[:64],
        batch_openai_id=batch_id if isinstance(batch_id, str) else "",
        event_id=event_id[:64] if isinstance(event_id, str) else "",
    )


# --- Receiving -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookOutcome:
    """What became of one delivery; `error` is None when it was accepted. `delivery` is its row
    (None for a delivery refused before its signature was verified: those are only counted);
    `duplicate` says the row was there already (a redelivery)."""

    delivery: WebhookDelivery | None
    error: WebhookError | None = None
    batch: Batch | None = None
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        return self.error is None

    @property
    def reason(self) -> str:
        if self.error:
            return self.error.reason
        return self.delivery.detail if self.delivery else ""


def webhook_endpoint_problem(connection: Connection) -> WebhookError | None:
    """Why this connection takes no webhooks at all (disabled, no usable secret), or None.
    Asked before the body is read."""
    if not connection.enabled:
        return WebhookNotConfigured("the connection is disabled")
    try:
        secret = connection.webhook_secret()
    except ConnectionKeyError:
        return WebhookNotConfigured(
            "the stored webhook secret cannot be decrypted (check BATCHWEB_ENCRYPTION_KEY)"
        )
    problem = webhook_secret_problem(secret)
    return WebhookNotConfigured(problem) if problem else None


def webhook_receive(
    *,
    connection: Connection,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime | None = None,
) -> WebhookOutcome:
    """Verify, parse and act on one delivery to `connection`'s URL.

    Accepted: a `batch.*` ending, correctly signed within 5 minutes, whose batch is not one of
    another connection's. The cached batch, when it is still running, is made due for the
    worker's next pass. A `webhook-id` accepted before is answered as accepted again
    (`duplicate`) and changes nothing. Everything else is refused with one of the
    `WebhookError` family: counted when the signature was not verified, recorded when it was.
    """
    now = now or timezone.now()
    try:
        problem = webhook_endpoint_problem(connection)
        if problem is not None:
            raise problem
        if len(body) > MAX_BODY_BYTES:
            raise WebhookBodyTooLarge()
        webhook_id = webhook_verify(
            secret=connection.webhook_secret(), headers=headers, body=body, now=now
        )
    except WebhookError as error:
        return webhook_refuse(connection=connection, error=error, now=now)

    # From here on the sender holds the connection's secret: it is OpenAI.
    seen = WebhookDelivery.objects.filter(connection=connection, webhook_id=webhook_id).first()
    if seen is not None and seen.accepted:
        return WebhookOutcome(delivery=seen, duplicate=True)
    event: WebhookEvent | None = None
    try:
        event = webhook_parse(body)
        if event.type not in BATCH_EVENTS:
            raise WebhookEventUnsupported(f"event type {event.type} is not handled")
        if not _ID_PATTERN.fullmatch(event.batch_openai_id):
            raise WebhookPayloadInvalid("the event names no batch in data.id")
        with transaction.atomic():
            return _accept(connection=connection, webhook_id=webhook_id, event=event, now=now)
    except WebhookError as error:
        return _refuse_signed(
            connection=connection, webhook_id=webhook_id, error=error, event=event, now=now
        )


def _accept(
    *, connection: Connection, webhook_id: str, event: WebhookEvent, now: dt.datetime
) -> WebhookOutcome:
    mine = Batch.objects.filter(connection=connection)
    batch = mine.filter(openai_id=event.batch_openai_id).first()
    if (
        batch is None
        and Batch.objects.filter(openai_id=event.batch_openai_id)
        .exclude(connection=connection)
        .exists()
    ):
        # Signed with this connection's secret, yet about a batch only another connection has:
        # the URL or secret was probably registered for the wrong project. Touch neither.
        raise WebhookOtherConnection()

    if batch is None:
        detail = "not cached yet: the next list walk brings it"
    elif batch.is_terminal:
        detail = f"cached as {batch.status} already: nothing to refresh"
    else:
        detail = f"cached as {batch.status}: refresh requested"
    fields = {
        "event_type": event.type,
        "batch_openai_id": event.batch_openai_id,
        "received_at": now,
        "accepted": True,
        "detail": detail[:255],
    }
    try:
        # The constraint (one row per connection and webhook-id) decides whether this id was
        # seen before, also between two deliveries arriving at once.
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                connection=connection, webhook_id=webhook_id, **fields
            )
    except IntegrityError:
        # Refused once (this version did not handle it then, say), or accepted a moment ago
        # by another process: only the first of those is taken up now.
        seen = WebhookDelivery.objects.filter(connection=connection, webhook_id=webhook_id)
        if not seen.filter(accepted=False).update(**fields):
            return WebhookOutcome(delivery=seen.first(), duplicate=True)
        delivery = seen.get()
    if batch is not None and not batch.is_terminal:
        # Only while still running: the worker may have finished it a moment ago.
        mine.filter(pk=batch.pk, running=True).update(next_refresh_at=now)
    Event.record(
        Event.Action.WEBHOOK,
        connection=connection,
        batch=batch,
        batch_openai_id=event.batch_openai_id,
        target=f"webhook {webhook_id}"[:255],
        detail=f"{event.type}: {detail}",
    )
    logger.info(
        "webhook %s: accepted %s %s for %s (%s)",
        connection.slug,
        webhook_id,
        event.type,
        event.batch_openai_id,
        detail,
    )
    return WebhookOutcome(delivery=delivery, batch=batch)


def _refuse_signed(
    *,
    connection: Connection,
    webhook_id: str,
    error: WebhookError,
    event: WebhookEvent | None,
    now: dt.datetime,
) -> WebhookOutcome:
    """Record a delivery OpenAI signed but batchweb does not take (an event type it does not
    handle, a body it cannot read, a batch of another connection): once per `webhook-id`."""
    batch_openai_id = _storable_id(event.batch_openai_id) if event else ""
    # Attach the batch only when it is this connection's (an audit entry takes its connection
    # from its batch).
    batch = (
        Batch.objects.filter(connection=connection, openai_id=batch_openai_id).first()
        if batch_openai_id
        else None
    )
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                connection=connection,
                webhook_id=webhook_id,
                event_type=event.type if event else "",
                batch_openai_id=batch_openai_id,
                received_at=now,
                accepted=False,
                detail=error.reason[:255],
            )
            Event.record(
                Event.Action.WEBHOOK_REFUSED,
                connection=connection,
                batch=batch,
                batch_openai_id=batch_openai_id,
                target=f"webhook {webhook_id}",
                detail=f"{event.type}: {error.reason}" if event else error.reason,
            )
    except IntegrityError:
        # A redelivery: its row and audit entry are there already.
        seen = WebhookDelivery.objects.filter(connection=connection, webhook_id=webhook_id)
        return WebhookOutcome(delivery=seen.first(), error=error, batch=batch, duplicate=True)
    logger.warning("webhook %s: refused %s: %s", connection.slug, webhook_id, error.reason)
    return WebhookOutcome(delivery=delivery, error=error, batch=batch)


def webhook_refuse(
    *, connection: Connection, error: WebhookError, now: dt.datetime | None = None
) -> WebhookOutcome:
    """Count a delivery refused before its signature was verified (also used by the view for
    bodies it would not read): one row per connection, updated in place. Nothing from the
    request is stored: anyone can send these."""
    now = now or timezone.now()
    counted = {"count": F("count") + 1, "last_at": now, "last_reason": error.reason[:255]}
    row = WebhookRefusals.objects.filter(connection=connection)
    if not row.update(**counted):
        try:
            with transaction.atomic():
                WebhookRefusals.objects.create(
                    connection=connection, count=1, last_at=now, last_reason=counted["last_reason"]
                )
        except IntegrityError:  # another process made the row a moment ago
            row.update(**counted)
    logger.warning("webhook %s: refused unverified delivery: %s", connection.slug, error.reason)
    return WebhookOutcome(delivery=None, error=error)


def _storable_id(raw: str) -> str:
    """An id as it may be stored and shown: printable ASCII, at most 128 characters."""
    return "".join(ch for ch in raw[: MAX_ID_LENGTH * 4] if "!" <= ch <= "~")[:MAX_ID_LENGTH]
